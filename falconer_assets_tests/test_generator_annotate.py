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


def _run(cache: dict, calls: list, heuristic=LabelHeuristic(candidate_pool=20), scorer_loads: list | None = None):
    def load_scorer():
        (scorer_loads if scorer_loads is not None else []).append(1)
        return lambda texts, q: [0.9 if any(t == DOCS[g].text for g in GAMES) else 0.1 for t in texts]

    return annotate_sub_tasks(
        corpus="debian_packages", docs=DOCS, sampled=SAMPLED, sub_tasks=SUB_TASKS, heuristic=heuristic,
        llm_identity=[None, "scripted", 0.0, 256], scorer_name="stub", cached=lambda k: cache.get(k, []),
        save=cache.__setitem__, chat=_chat(calls), load_scorer=load_scorer)


def test_annotates_each_sub_task_once_with_appendix_b_picks_outside_the_sample():
    cache, calls, loads = {}, [], []
    result = _run(cache, calls, scorer_loads=loads)
    n_train = sum(s == "train" for _, s in SAMPLED)
    assert [st.sub_task for st in result.sub_tasks] == [("label", GAME_Q), ("span", GENRE_Q)]
    label, span = result.sub_tasks
    assert result.budget == n_train and result.pool_size == 20 and loads == [1]
    # every sampled doc gets both sub-tasks with its own split; the extras are train-only, outside the sample
    sample = dict(SAMPLED)
    assert {(r.doc_id, r.split) for r in span.rows} == set(SAMPLED)
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
    assert set(cache) == {subtask_cache_key("debian_packages", digest(SAMPLED), st, LabelHeuristic(candidate_pool=20),
                                            [None, "scripted", 0.0, 256], "stub") for st in SUB_TASKS}


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
