"""The annotation flow alone (falconer_assets.generator.annotate), no Dagster, no warehouse: real Debian
documents, the real prompts and answer alignment, a scripted chat (the conftest one's gold answers) and a
scorer that ranks games first, so the Appendix B picks and the cache reuse can be checked exactly."""

from __future__ import annotations

import json

import pytest

from falconer_assets.generator.annotate import LabelHeuristic, annotate_sub_tasks, subtask_cache_key
from falconer_assets.generator.sampling import sample_with_split
from falconer_assets.inputs.corpus import Document
from falconer_assets.llm.client import ChatResult
from falconer_assets.llm.prompts import label_messages, span_messages
from falconer_assets.versions import digest
from falconer_assets_tests.conftest import GAME_Q, GENRE_Q, debian_records, genre_of

RECORDS = debian_records(12, 28)
DOCS = {r["id"]: Document(r["id"], r["text"]) for r in RECORDS}
GAMES = {r["id"] for r in RECORDS if r["section"] == "games"}
SAMPLED = sample_with_split(sorted(DOCS), 12, 0.25, seed=0)
SUB_TASKS = [("label", GAME_Q), ("span", GENRE_Q), ("label", GAME_Q)]  # the repeated question counts once


def _chat(calls: list):
    answers = {}
    for doc_id, d in DOCS.items():
        answers[json.dumps(label_messages(d.text, GAME_Q))] = "Yes" if doc_id in GAMES else "No"
        answers[json.dumps(span_messages(d.text, GENRE_Q))] = genre_of(d.text) or "NONE"

    def chat(messages):
        calls.append(messages)
        return ChatResult(text=answers[json.dumps(messages)], prompt_tokens=10, completion_tokens=2, latency_s=0.25,
                          cached=False)

    return chat


PICKS_ONLY = LabelHeuristic(candidate_pool=20, heldout_positives=0)
"""The Appendix B training picks without the held-out enlargement (tested on its own below)."""


def _run(cache: dict, calls: list, heuristic=PICKS_ONLY, scorer_loads: list | None = None,
         strata: dict | None = None):
    def load_scorer():
        (scorer_loads if scorer_loads is not None else []).append(1)
        return lambda texts, q: [0.9 if any(t == DOCS[g].text for g in GAMES) else 0.1 for t in texts]

    return annotate_sub_tasks(
        corpus="debian_packages", docs=DOCS, sampled=SAMPLED, sub_tasks=SUB_TASKS, heuristic=heuristic,
        llm_identity=[None, "scripted", 0.0, 256], scorer_name="stub", cached=lambda k: cache.get(k, []),
        save=cache.__setitem__, chat=_chat(calls), load_scorer=load_scorer,
        cached_stratum=(strata if strata is not None else {}).get,
        save_stratum=(strata if strata is not None else {}).__setitem__)


def test_annotates_each_sub_task_once_with_appendix_b_picks_outside_the_sample():
    cache, calls, loads = {}, [], []
    result = _run(cache, calls, scorer_loads=loads)
    n_train = sum(s == "train" for _, s in SAMPLED)
    assert [st.sub_task for st in result.sub_tasks] == [("label", GAME_Q), ("span", GENRE_Q)]
    label, span = result.sub_tasks
    assert result.budget == n_train and result.pool_size == 20 and loads == [1]
    # every sampled doc gets both sub-tasks with its own split; the extras are train-only, outside the sample
    sample = dict(SAMPLED)
    assert {(r.doc_id, r.split) for r in span.rows if r.origin == "sample"} == set(SAMPLED)
    extra = [r for r in label.rows if r.origin != "sample"]
    assert len(extra) == n_train and {r.split for r in extra} == {"train"} and not {r.doc_id for r in extra} & set(sample)
    # the scorer ranks games first, so every likely positive is a game and the annotator agrees
    positives = [r for r in extra if r.origin == "likely_positive"]
    assert positives and all(r.doc_id in GAMES and r.label for r in positives)
    assert label.heuristic_summary()["llm_yes_rate"]["likely_positive"] == 1.0
    # span answers are aligned to offsets in the document
    for r in span.rows:
        assert all(DOCS[r.doc_id].text[s.start:s.end] == s.text for s in r.spans)
    assert result.llm_calls == len(calls) == len(label.rows) + len(span.rows)
    assert result.llm_seconds == pytest.approx(0.25 * len(calls)) and result.llm_tokens == 12 * len(calls)
    key = lambda st, docs=(): subtask_cache_key("debian_packages", digest(SAMPLED), st,  # noqa: E731
                                                LabelHeuristic(candidate_pool=20), [None, "scripted", 0.0, 256], "stub",
                                                docs)
    assert set(cache) == {key(("label", GAME_Q)),
                          key(("span", GENRE_Q), [r.doc_id for r in label.rows if r.origin == "likely_positive"])}


def test_a_second_run_reuses_the_cache_without_any_call_or_scoring():
    cache, calls = {}, []
    first = _run(cache, calls)
    again_calls, loads = [], []
    again = _run(cache, again_calls, scorer_loads=loads)
    assert again_calls == [] and loads == [] and all(st.reused for st in again.sub_tasks)
    assert again.rows == first.rows


def test_heuristic_off_or_other_settings_change_the_label_key_only():
    on = LabelHeuristic(candidate_pool=20)
    key = lambda st, h: subtask_cache_key("c", "v", st, h, ["m"], "stub")  # noqa: E731
    assert key(("label", GAME_Q), on) != key(("label", GAME_Q), LabelHeuristic(candidate_pool=20, seed=1))
    assert key(("span", GENRE_Q), on) == key(("span", GENRE_Q), LabelHeuristic(label_heuristic=False))
    result = _run({}, [], heuristic=LabelHeuristic(label_heuristic=False))
    assert result.budget == 0 and all(r.origin == "sample" for r in result.rows)


def test_bad_settings_fail_before_any_call():
    calls = []
    with pytest.raises(ValueError, match="random_share"):
        _run({}, calls, heuristic=LabelHeuristic(random_share=1.5))
    assert calls == []


def test_span_sub_tasks_are_also_annotated_on_the_likely_positive_picks():
    """Genres occur only in games, which are rare in a random sample: the span sub-task is annotated on the
    label sub-task's likely-positive picks too (train split), and those docs bring training spans."""
    result = _run({}, [])
    label, span = result.sub_tasks
    picks = [r.doc_id for r in label.rows if r.origin == "likely_positive"]
    on_picks = [r for r in span.rows if r.origin != "sample"]
    assert picks and [r.doc_id for r in on_picks] == picks
    assert {(r.split, r.origin) for r in on_picks} == {("train", "likely_positive")}
    # not on the random or likely-negative picks of the label sub-task
    others = {r.doc_id for r in label.rows if r.origin in ("random", "likely_negative")}
    assert others and not others & {r.doc_id for r in span.rows}
    # the picks are games that name a genre: each adds a training span, more than the sample's train split has
    assert all(len(r.spans) == 1 and r.spans[0].text == genre_of(DOCS[r.doc_id].text) for r in on_picks)
    sample_train_spans = sum(len(r.spans) for r in span.rows if r.origin == "sample" and r.split == "train")
    assert sum(len(r.spans) for r in on_picks) > sample_train_spans
    assert span.summary()["extra_docs"] == len(picks)
    # the heuristic off: the span sub-task stays on the sample
    off = _run({}, [], heuristic=LabelHeuristic(label_heuristic=False))
    assert all(r.origin == "sample" for r in off.sub_tasks[1].rows)


def test_span_picks_come_from_cached_label_rows_without_scoring():
    """A cached label sub-task (its picks included) feeds a span sub-task annotated now: no scorer is loaded,
    and the span rows are the ones a fresh run makes."""
    cache, calls = {}, []
    first = _run(cache, calls)
    span_key = next(k for k, rows in cache.items() if rows[0].kind == "span")
    del cache[span_key]
    again_calls, loads = [], []
    again = _run(cache, again_calls, scorer_loads=loads)
    label, span = again.sub_tasks
    assert label.reused and not span.reused and loads == []
    assert len(again_calls) == len(span.rows) and sorted(span.rows, key=str) == sorted(first.sub_tasks[1].rows, key=str)


def test_span_key_holds_its_extra_docs_and_label_keys_do_not_move():
    on = LabelHeuristic(candidate_pool=20)
    key = lambda st, h=on, docs=(): subtask_cache_key("c", "v", st, h, ["m"], "stub", docs)  # noqa: E731
    span, label = ("span", GENRE_Q), ("label", GAME_Q)
    # a span sub-task without extra docs keeps the key it always had, whatever the heuristic
    old_span_key = digest("subtask", "c", "v", "span", GENRE_Q, ["m"], None)
    assert key(span) == old_span_key == key(span, LabelHeuristic(label_heuristic=False))
    # its extra docs enter the key, as a set: other picks (another label question, seed or scorer) re-annotate
    assert key(span, docs=["a", "b"]) != old_span_key
    assert key(span, docs=["a", "b"]) == key(span, docs=["b", "a", "a"]) != key(span, docs=["a", "c"])
    # label keys are what they were, and take no extra docs
    old_label_key = digest("subtask", "c", "v", "label", GAME_Q, ["m"], {**on.settings(), "scorer": "stub"})
    assert key(label) == old_label_key
    with pytest.raises(ValueError, match="span sub-tasks"):
        key(label, docs=["a"])


def test_a_new_label_question_with_other_picks_re_annotates_the_span_sub_task():
    """The span sub-task's rows depend on the label sub-task's picks: a plan whose label question picks other
    docs cannot reuse them; one whose picks are the same (or a plan without picks) can."""
    cache = {}
    _run(cache, [])
    calls = []
    other = annotate_sub_tasks(
        corpus="debian_packages", docs=DOCS, sampled=SAMPLED,
        sub_tasks=[("label", "Is this a library?"), ("span", GENRE_Q)],
        heuristic=PICKS_ONLY, llm_identity=[None, "scripted", 0.0, 256], scorer_name="stub",
        cached=lambda k: cache.get(k, []), save=cache.__setitem__,
        chat=lambda m: (calls.append(m), ChatResult(text="No" if "library" in json.dumps(m) else "NONE",
                                                    prompt_tokens=1, completion_tokens=1, latency_s=0.0,
                                                    cached=False))[1],
        load_scorer=lambda: lambda texts, q: [0.9 if "lib" in t.lower() else 0.1 for t in texts])
    label, span = other.sub_tasks
    picks = [r.doc_id for r in label.rows if r.origin == "likely_positive"]
    assert picks and not set(picks) & GAMES
    assert not span.reused and [r.doc_id for r in span.rows if r.origin != "sample"] == picks
