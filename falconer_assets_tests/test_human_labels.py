"""Human labels (issue 14, item 4; paper 3.5: curated human annotations stand in for the LLM's).

The strict reader of ``data/tasks/<task>.labels.jsonl`` (falconer_assets.inputs.labels) on real Debian texts,
one exact message per kind of bad line; the Label Studio import (falconer_assets.inputs.label_studio) on a
small export shaped like the real one, and its entry point on a real data folder; the annotation flow with
human answers (no Dagster); and the ``annotations`` asset on a real Dagster instance with the scripted LLM:
human rows replace the LLM's (origin ``human``, the LLM not asked), and a labels edit makes ``annotations``
stale, and only it, through the ``task_labels`` source the task sync reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import pytest

from falconer_assets import sync
from falconer_assets.definitions import build_definitions
from falconer_assets.generator.annotate import annotate_sub_tasks
from falconer_assets.generator.sampling import candidate_pool
from falconer_assets.inputs.corpus import Document
from falconer_assets.inputs.label_studio import LabelStudioError, import_label_studio, main, write_labels
from falconer_assets.inputs.labels import HumanLabel, LabelProblem, LabelsError, read_labels
from falconer_assets.llm.prompts import label_messages, span_messages
from falconer_assets.spans import Span
from falconer_assets_tests.conftest import (
    GAME_Q,
    GENRE_Q,
    ZERO_AD,
    ScriptedLLM,
    genre_of,
    latest_metadata,
    make_small_data_dir,
    register_partitions,
)
from falconer_assets_tests.test_annotate import WESNOTH
from falconer_assets_tests.test_generator_annotate import DOCS as DEBIAN_DOCS
from falconer_assets_tests.test_generator_annotate import GAMES, PICKS_ONLY, SAMPLED, _chat

PLAN_CALLS = [("label", GAME_Q), ("span", GENRE_Q)]
DOCS = {"debian:0ad": Document("debian:0ad", ZERO_AD), "debian:wesnoth": Document("debian:wesnoth", WESNOTH)}
GOOD = {"doc_id": "debian:0ad", "question": GAME_Q, "label": True}


def _write(path: Path, *lines) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines), encoding="utf-8")
    return path


def _read(tmp_path: Path, *lines):
    return read_labels(_write(tmp_path / "t.labels.jsonl", *lines), DOCS, PLAN_CALLS, corpus="debian_packages")


# ---------------------------------------------------------------------------------------------- the reader

def test_good_lines_become_labels_checked_against_the_text(tmp_path):
    got = _read(tmp_path, GOOD,
                {"doc_id": "debian:0ad", "question": GENRE_Q, "spans": ["strategy"]},
                "   ",
                {"doc_id": "debian:wesnoth", "question": GAME_Q, "label": False},
                {"doc_id": "debian:wesnoth", "question": GENRE_Q, "spans": []},
                {"doc_id": "debian:0ad", "question": "What is the genre of the game?",
                 "spans": [{"start": 172, "end": 176, "text": "game"}, {"start": 98, "end": 102}]})
    assert got.labels[1] == HumanLabel("debian:0ad", "span", GENRE_Q, spans=(Span(83, 91, "strategy"),), line_no=2)
    assert got.labels[0].label is True and got.labels[2].label is False and got.labels[3].spans == ()
    assert got.counts() == {"lines": 5, "labels": 4, "label_answers": 2, "span_answers": 2, "spans": 1, "docs": 2,
                            "problems": 1}
    # the duplicate (doc, question) is a problem naming the first line; the first answer stays
    assert [str(p) for p in got.problems] == [
        f"t.labels.jsonl, line 6: duplicate answer for doc 'debian:0ad' and question {GENRE_Q!r} (first on line 2)"]
    assert got.by_sub_task()[("span", GENRE_Q)]["debian:0ad"].line_no == 2


BAD_LINES = [
    ('{"doc_id": "debian:0ad", "question": ', "invalid JSON: Expecting value at column 38"),
    ('{"doc_id": "debian:0ad", "doc_id": "debian:wesnoth", "question": "q", "label": true}',
     "invalid JSON: duplicate key 'doc_id'"),
    ('["debian:0ad", true]', "expected a JSON object, got list"),
    ({**GOOD, "note": "checked"}, "unknown key 'note' (known: doc_id, question, label, spans)"),
    ({"question": GAME_Q, "label": True}, "missing or non-string 'doc_id'"),
    ({"doc_id": "debian:0ad", "label": True}, "missing or non-string 'question'"),
    ({**GOOD, "doc_id": "debian:nethack"}, "unknown doc id 'debian:nethack': not in corpus 'debian_packages'"),
    ({**GOOD, "question": "Is it a game?"},
     f"question 'Is it a game?' is not asked by the plan; it asks {GAME_Q!r} (label), {GENRE_Q!r} (span)"),
    ({**GOOD, "question": "is this package a  game?"},
     f"question 'is this package a  game?' is not asked by the plan (did you mean {GAME_Q!r}?)"),
    ({**GOOD, "question": GENRE_Q}, f"question {GENRE_Q!r} is a span sub-task of the plan: give 'spans', not 'label'"),
    ({"doc_id": "debian:0ad", "question": GAME_Q, "spans": []},
     f"question {GAME_Q!r} is a label sub-task of the plan: give 'label', not 'spans'"),
    ({**GOOD, "spans": []}, "give either 'label' or 'spans', not both"),
    ({"doc_id": "debian:0ad", "question": GAME_Q}, "missing 'label' (true or false) or 'spans' (a list)"),
    ({**GOOD, "label": "yes"}, "'label' must be true or false, got str 'yes'"),
    ({**GOOD, "label": 1}, "'label' must be true or false, got int 1"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": "strategy"},
     "'spans' must be a list of strings or {\"start\", \"end\"} objects, got str"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": ["racing"]},
     "span #0 'racing' is not in the text of 'debian:0ad'"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": ["game"]},
     "span #0 'game' occurs 3 times in the text of 'debian:0ad' (at 98, 172, 447): give {\"start\", \"end\"} "
     "offsets instead"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": [" "]}, "span #0 is empty"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": [83]},
     "span #0 must be a string or a {\"start\", \"end\"} object, got int"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": [{"start": 450, "end": 470}]},
     "span #0: offsets [450, 470) are outside the text of 'debian:0ad' (459 characters)"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": [{"start": -1, "end": 5}]},
     "span #0: offsets [-1, 5) are outside the text of 'debian:0ad' (459 characters)"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": [{"start": 91, "end": 83}]},
     "span #0: offsets [91, 83) are empty or reversed"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": [{"start": "83", "end": 91}]},
     "span #0: 'start' and 'end' must be whole numbers, got '83' and 91"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": [{"start": 83, "end": 91, "text": "strategic"}]},
     "span #0: 'text' 'strategic' does not match the text of 'debian:0ad' at [83, 91), which is 'strategy'"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": [{"start": 83, "end": 91, "label": "genre"}]},
     "span #0: unknown key 'label' (known: start, end, text)"),
    ({"doc_id": "debian:0ad", "question": GENRE_Q, "spans": ["strategy", {"start": 83, "end": 91}]},
     "span #1 repeats span #0 at [83, 91)"),
]


@pytest.mark.parametrize("line, message", BAD_LINES, ids=[m[:40] for _, m in BAD_LINES])
def test_each_bad_line_is_a_problem_naming_the_file_line_and_problem(tmp_path, line, message):
    got = _read(tmp_path, GOOD, line)
    assert got.problems == (LabelProblem("t.labels.jsonl", 2, message),)
    assert str(got.problems[0]) == f"t.labels.jsonl, line 2: {message}"
    assert [h.line_no for h in got.labels] == [1] and got.lines == 2  # nothing dropped without a word


def test_a_file_with_bad_lines_raises_listing_them_all(tmp_path):
    got = _read(tmp_path, "not json", GOOD, {**GOOD, "doc_id": "debian:nethack"}, {**GOOD, "label": None})
    assert got.counts()["problems"] == 3 and len(got.labels) == 1
    with pytest.raises(LabelsError) as info:
        got.raise_for_problems()
    assert str(info.value) == (
        f"human labels {tmp_path / 't.labels.jsonl'}: 3 bad line(s) of 4; fix or remove them (no label of the file "
        "is used until then):\n"
        "  t.labels.jsonl, line 1: invalid JSON: Expecting value at column 1\n"
        "  t.labels.jsonl, line 3: unknown doc id 'debian:nethack': not in corpus 'debian_packages'\n"
        "  t.labels.jsonl, line 4: 'label' must be true or false, got NoneType None")
    with pytest.raises(FileNotFoundError):
        read_labels(tmp_path / "missing.labels.jsonl", DOCS, PLAN_CALLS)


# -------------------------------------------------------------------------------------------- Label Studio

MUSESCORE = ("MuseScore is a free music notation program 🎼 with a rhythm game mode. It plays back scores as "
             "MIDI and exports them as sheet music.")


def _export() -> list[dict]:
    """A JSON export of a Label Studio project with a Text tag, Labels ``genre`` and Choices ``is_game`` (shaped as
    Label Studio 1.x writes it): a cancelled annotation, two submissions of one task, a relation, a prediction,
    an unlabelled task, and offsets in UTF-16 code units after an emoji (older Label Studio versions)."""
    def span(start, end, text, rid):
        return {"value": {"start": start, "end": end, "text": text, "labels": ["genre"]}, "id": rid,
                "from_name": "genre", "to_name": "text", "type": "labels", "origin": "manual"}

    def choice(word, rid):
        return {"value": {"choices": [word]}, "id": rid, "from_name": "is_game", "to_name": "text", "type": "choices",
                "origin": "manual"}

    def annotation(aid, result, updated, cancelled=False):
        return {"id": aid, "completed_by": 1, "result": result, "was_cancelled": cancelled, "ground_truth": False,
                "created_at": "2025-05-02T09:12:41.518209Z", "updated_at": updated, "lead_time": 14.2,
                "prediction": {}, "result_count": 0, "task": aid // 10, "parent_prediction": None,
                "parent_annotation": None, "last_created_by": None, "project": 3, "import_id": None}

    return [
        {"id": 1, "data": {"doc_id": "debian:0ad", "text": ZERO_AD}, "meta": {}, "project": 3, "inner_id": 1,
         "annotations": [
             annotation(10, [], "2025-05-02T09:10:00.000000Z", cancelled=True),
             annotation(11, [span(83, 91, "strategy", "a1"), choice("Yes", "a2"),
                             {"from_id": "a1", "to_id": "a2", "type": "relation", "direction": "right"}],
                        "2025-05-02T09:12:41.518236Z")],
         "predictions": [{"model_version": "v1", "result": [choice("No", "p1")]}], "drafts": [],
         "created_at": "2025-05-02T08:00:00.000000Z", "updated_at": "2025-05-02T09:12:41.533307Z"},
        {"id": 2, "data": {"doc_id": "debian:wesnoth", "text": WESNOTH}, "meta": {}, "project": 3, "inner_id": 2,
         "annotations": [
             annotation(21, [choice("Yes", "b1")], "2025-05-03T10:00:00.000000Z"),
             annotation(20, [choice("no", "b2")], "2025-05-03T11:30:00.000000Z")],  # the later one counts
         "predictions": [], "drafts": []},
        {"id": 3, "data": {"doc_id": "debian:musescore", "text": MUSESCORE}, "meta": {}, "project": 3, "inner_id": 3,
         "annotations": [annotation(30, [span(53, 59, "rhythm", "c1"), choice("No", "c2")],
                                    "2025-05-04T12:00:00.000000Z")],
         "predictions": [], "drafts": []},
        {"id": 4, "data": {"doc_id": "debian:zlib1g", "text": "compression library - runtime"}, "meta": {},
         "project": 3, "inner_id": 4, "annotations": [], "predictions": [], "drafts": []},
    ]


def test_label_studio_export_round_trips_into_a_labels_file(tmp_path):
    assert MUSESCORE[52:58] == "rhythm" and MUSESCORE.encode("utf-16-le")[53 * 2:59 * 2].decode("utf-16-le") == "rhythm"
    result = import_label_studio(json.loads(json.dumps(_export())), {"genre": GENRE_Q, "is_game": GAME_Q})
    assert result.problems == []
    assert result.lines == [
        {"doc_id": "debian:0ad", "question": GAME_Q, "label": True},
        {"doc_id": "debian:0ad", "question": GENRE_Q, "spans": [{"start": 83, "end": 91, "text": "strategy"}]},
        {"doc_id": "debian:musescore", "question": GAME_Q, "label": False},
        {"doc_id": "debian:musescore", "question": GENRE_Q, "spans": [{"start": 52, "end": 58, "text": "rhythm"}]},
        {"doc_id": "debian:wesnoth", "question": GAME_Q, "label": False},
        {"doc_id": "debian:wesnoth", "question": GENRE_Q, "spans": []},  # submitted without a genre: none
    ]
    assert result.counts == {"tasks": 4, "tasks_annotated": 3, "tasks_without_annotation": 1,
                             "annotations_superseded": 1, "label_answers": 3, "span_answers": 3, "spans": 2,
                             "utf16_offsets_converted": 1, "other_regions": {"relation": 1}}
    path = tmp_path / "debian_game_genres.labels.jsonl"
    write_labels(path, result.lines)
    docs = {**DOCS, "debian:musescore": Document("debian:musescore", MUSESCORE)}
    back = read_labels(path, docs, PLAN_CALLS, corpus="debian_packages").raise_for_problems()
    assert [(h.doc_id, h.kind, h.label, h.spans) for h in back.labels] == [
        ("debian:0ad", "label", True, ()), ("debian:0ad", "span", None, (Span(83, 91, "strategy"),)),
        ("debian:musescore", "label", False, ()), ("debian:musescore", "span", None, (Span(52, 58, "rhythm"),)),
        ("debian:wesnoth", "label", False, ()), ("debian:wesnoth", "span", None, ())]
    # without the map, the Label Studio names are the questions: the reader names them, against the plan
    unmapped = import_label_studio(_export())
    write_labels(path, unmapped.lines)
    assert str(read_labels(path, docs, PLAN_CALLS).problems[0]) == (
        f"debian_game_genres.labels.jsonl, line 1: question 'genre' is not asked by the plan; it asks {GAME_Q!r} "
        f"(label), {GENRE_Q!r} (span)")


def test_label_studio_problems_are_named_by_task():
    export = _export()
    export[0]["annotations"][1]["result"][0]["value"]["text"] = "Strategy"
    export[1]["annotations"][1]["result"][0]["value"]["choices"] = ["Maybe"]
    export[2]["annotations"][0]["result"][0]["value"].update(start="/div[1]/text()[1]", end="/div[1]/text()[1]")
    export[3]["data"]["doc_id"] = "debian:0ad"
    export[3]["annotations"] = [export[0]["annotations"][1]]
    export.append({"id": 5, "data": {"text": WESNOTH}, "annotations": []})
    result = import_label_studio(export, {"genre": GENRE_Q, "is_game": GAME_Q})
    assert result.problems == [
        "task #0 (id 1): span 'Strategy' at [83, 91): the text there is 'strategy'",
        "task #1 (id 2): choices 'is_game': choice 'Maybe' is not yes/no or true/false",
        "task #2 (id 3): span ['genre']: offsets '/div[1]/text()[1]', '/div[1]/text()[1]' are not character offsets "
        "(a Text tag is needed, not HyperText)",
        "task #3 (id 4): doc 'debian:0ad' is also annotated in task #0",
        "task #4 (id 5): no document id: 'data' has no string field 'doc_id' or 'id'",
    ]
    # a question with a bad region gets no line (not an empty answer); the task's other answers stay
    assert [(d["doc_id"], d["question"]) for d in result.lines] == [
        ("debian:0ad", GAME_Q), ("debian:musescore", GAME_Q), ("debian:wesnoth", GENRE_Q)]
    with pytest.raises(LabelStudioError, match="a list of tasks, got dict"):
        import_label_studio({"tasks": []})


def test_label_studio_entry_point_checks_the_corpus_and_writes_the_file(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    data_dir = make_small_data_dir(tmp_path / "data")
    corpus = data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"
    records = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()[:40]]
    game = next(r for r in records if r["section"] == "games" and r["text"].count(genre_of(r["text"])) == 1)
    genre = genre_of(game["text"])
    start = game["text"].index(genre)
    export = _export()[:1]
    export[0]["data"] = {"doc_id": game["id"], "text": game["text"]}
    export[0]["annotations"][1]["result"][0]["value"].update(start=start, end=start + len(genre), text=genre)
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export), encoding="utf-8")
    args = [str(path), "debian_game_genres", "--data-dir", str(data_dir), "--question", f"genre={GENRE_Q}",
            "--question", f"is_game={GAME_Q}"]
    assert main(args) == 0
    out = data_dir / "tasks" / "debian_game_genres.labels.jsonl"
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == [
        {"doc_id": game["id"], "question": GAME_Q, "label": True},
        {"doc_id": game["id"], "question": GENRE_Q,
         "spans": [{"start": start, "end": start + len(genre), "text": genre}]}]
    assert f"wrote 2 labels (1 docs) to {out}" in capsys.readouterr().out
    assert main(args) == 2 and "exists (use --force" in capsys.readouterr().err
    # an export made from another version of the text: nothing written, the doc named
    export[0]["data"]["text"] = game["text"] + " (edited)"
    path.write_text(json.dumps(export), encoding="utf-8")
    other = tmp_path / "other.labels.jsonl"
    assert main(args + ["--out", str(other)]) == 1 and not other.exists()
    assert f"doc {game['id']!r}: the export's text differs from corpus 'debian_packages''s" in capsys.readouterr().err


# ------------------------------------------------------------------------------- the annotation flow, pure

def _flow(cache: dict, calls: list, human=None, loads: list | None = None):
    def load_scorer():
        (loads if loads is not None else []).append(1)
        return lambda texts, q: [0.9 if any(t == DEBIAN_DOCS[g].text for g in GAMES) else 0.1 for t in texts]

    return annotate_sub_tasks(
        corpus="debian_packages", docs=DEBIAN_DOCS, sampled=SAMPLED, sub_tasks=PLAN_CALLS, heuristic=PICKS_ONLY,
        llm_identity=[None, "scripted", 0.0, 256], scorer_name="stub", cached=lambda k: cache.get(k, []),
        save=cache.__setitem__, chat=_chat(calls), load_scorer=load_scorer, human=human)


def test_human_answers_replace_the_llms_which_is_never_asked_them():
    split = dict(SAMPLED)
    train = next(d for d, s in SAMPLED if s == "train")
    heldout = next(d for d, s in SAMPLED if s == "heldout")
    pool = candidate_pool(DEBIAN_DOCS, set(split), PICKS_ONLY.candidate_pool, PICKS_ONLY.seed)
    outside = sorted(set(DEBIAN_DOCS) - set(split) - set(pool))[0]  # never picked: the flow would not annotate it
    text = DEBIAN_DOCS[heldout].text
    word = text.split()[1]
    human = {("label", GAME_Q): {train: HumanLabel(train, "label", GAME_Q, label=False, line_no=1),
                                 outside: HumanLabel(outside, "label", GAME_Q, label=True, line_no=3)},
             ("span", GENRE_Q): {heldout: HumanLabel(heldout, "span", GENRE_Q, line_no=2, spans=(
                 Span(text.index(word), text.index(word) + len(word), word),))}}
    cache, plain_calls = {}, []
    plain = _flow(cache, plain_calls)
    calls = []
    result = _flow(cache, calls, human)
    # the LLM is never asked a pair a human answered, and is asked every other pair it was asked before
    asked = {json.dumps(m) for m in calls}
    assert json.dumps(label_messages(DEBIAN_DOCS[train].text, GAME_Q)) not in asked
    assert json.dumps(span_messages(text, GENRE_Q)) not in asked
    assert asked == {json.dumps(m) for m in plain_calls} - {json.dumps(label_messages(DEBIAN_DOCS[train].text, GAME_Q)),
                                                              json.dumps(span_messages(text, GENRE_Q))}
    assert result.llm_calls == len(calls) == len(plain_calls) - 2
    rows = {(r.kind, r.doc_id): r for r in result.rows}
    label_row = rows[("label", train)]
    assert (label_row.origin, label_row.split, label_row.label) == ("human", "train", False)
    assert (rows[("span", heldout)].origin, rows[("span", heldout)].split) == ("human", "heldout")
    assert rows[("span", heldout)].spans[0].text == word
    assert rows[("span", heldout)].raw == "human label (labels file line 2)"
    assert (rows[("label", outside)].origin, rows[("label", outside)].split) == ("human", "train")  # outside the sample
    assert (result.human_rows, result.human_outside_sample) == (3, 1)
    assert len(result.rows) == len(plain.rows) + 1 and split[heldout] == "heldout"
    assert result.sub_tasks[0].summary()["human_docs"] == 2 and result.sub_tasks[1].summary()["human_docs"] == 1
    # an edited answer on the same docs reuses every cached sub-task: no call, no scoring
    human[("label", GAME_Q)][train] = HumanLabel(train, "label", GAME_Q, label=True, line_no=1)
    again_calls, loads = [], []
    again = _flow(cache, again_calls, human, loads)
    assert again_calls == [] and loads == [] and all(st.reused for st in again.sub_tasks)
    assert {(r.kind, r.doc_id): r.label for r in again.rows}[("label", train)] is True
    # without human labels the keys are those of before: the first run's rows, no call
    none_calls = []
    assert sorted(_flow(cache, none_calls).rows, key=str) == sorted(plain.rows, key=str) and none_calls == []
    with pytest.raises(ValueError, match="not in corpus 'debian_packages': 'debian:nope'"):
        _flow({}, [], {("label", GAME_Q): {"debian:nope": HumanLabel("debian:nope", "label", GAME_Q, label=True)}})
    with pytest.raises(ValueError, match="sub-task the plan does not ask"):
        _flow({}, [], {("label", "Other?"): {train: HumanLabel(train, "label", "Other?", label=True)}})


# ------------------------------------------------------------------------------ the asset, on a real instance

TASK = "debian_game_genres"
SAMPLE_CONFIG = {"fraction": 0.25, "min_docs": 10, "max_docs": 100, "heldout_fraction": 0.25, "seed": 0}
NO_HEURISTIC = {"ops": {"annotations": {"config": {"label_heuristic": False}}}}


class CountingLLM(ScriptedLLM):
    """The scripted LLM, recording every annotation prompt it answers (planner prompts are not counted)."""

    calls: ClassVar[list[str]] = []

    def chat(self, messages, **params):
        if "get_label" not in json.dumps(messages):
            CountingLLM.calls.append(json.dumps(messages))
        return super().chat(messages, **params)


def _executable(defs):
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]


def _tick(defs, instance, cursor):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    requested = {k.to_user_string(): {str(p) for p in result.get_requested_partitions(k)}
                 for k in defs.resolve_asset_graph().get_all_asset_keys() if result.get_num_requested(k)}
    return requested, result.cursor


def test_annotations_asset_takes_human_labels_and_goes_stale_when_they_change(tmp_path):
    (tmp_path / "data").mkdir()
    data_dir = make_small_data_dir(tmp_path / "data")
    corpus = data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"
    texts = {r["id"]: r["text"] for r in map(json.loads, corpus.read_text(encoding="utf-8").splitlines()[:40])}
    llm = CountingLLM(corpus_path=str(corpus), cache_path=str(data_dir / "llm.duckdb"))
    defs = build_definitions(data_dir, llm=llm)
    db = str(data_dir / "falconer.duckdb")
    labels = data_dir / "tasks" / f"{TASK}.labels.jsonl"
    CountingLLM.calls.clear()
    with dg.instance_for_test() as instance:
        register_partitions(instance, data_dir)  # reports task_labels[TASK] = "none": annotations never waits for it
        assert dg.materialize(_executable(defs), selection=[dg.AssetKey(["debian_packages", "corpus_sample"])],
                              instance=instance, resources=defs.resources,
                              run_config={"ops": {"debian_packages__corpus_sample": {"config": SAMPLE_CONFIG}}}).success
        with duckdb.connect(db, read_only=True) as con:
            sample = dict(con.execute("SELECT doc_id, split FROM corpus_sample").fetchall())
        train = sorted(d for d, s in sample.items() if s == "train")[0]
        heldout = sorted(d for d, s in sample.items() if s == "heldout")[0]
        outside = sorted(set(texts) - set(sample))[0]
        word = texts[heldout].split()[0]
        start = texts[heldout].index(word)
        _write(labels, {"doc_id": train, "question": GAME_Q, "label": True},
               {"doc_id": heldout, "question": GENRE_Q, "spans": [{"start": start, "end": start + len(word)}]},
               {"doc_id": outside, "question": GAME_Q, "label": False})
        changes = sync.sync_tasks(data_dir, instance)
        assert [(e.asset_key.to_user_string(), e.partition) for e in changes.events] == [("task_labels", TASK)]
        sync.apply(instance, changes)

        assert dg.materialize(_executable(defs), selection=[dg.AssetKey("plan"), dg.AssetKey("annotations")],
                              partition_key=TASK, instance=instance, resources=defs.resources,
                              run_config=NO_HEURISTIC).success
        # the LLM answered every sampled (doc, sub-task) pair but the two a human answered
        assert len(CountingLLM.calls) == 2 * len(sample) - 2
        assert json.dumps(label_messages(texts[train], GAME_Q)) not in CountingLLM.calls
        with duckdb.connect(db, read_only=True) as con:
            rows = con.execute("SELECT kind, doc_id, split, origin, label, spans FROM annotations WHERE task = ? "
                               "AND origin = 'human' ORDER BY kind, doc_id", [TASK]).fetchall()
            total = con.execute("SELECT count(*) FROM annotations WHERE task = ?", [TASK]).fetchone()[0]
        assert total == 2 * len(sample) + 1
        label_rows = sorted((d, s, lab) for k, d, s, _, lab, _ in rows if k == "label")
        assert label_rows == sorted([(train, "train", True), (outside, "train", False)])
        (span_row,) = [r for r in rows if r[0] == "span"]
        assert span_row[1:4] == (heldout, "heldout", "human")
        assert [(s["start"], s["text"]) for s in json.loads(span_row[5])] == [(start, word)]
        meta = latest_metadata(instance, "annotations", TASK)
        assert (meta["human_labels"].value, meta["human_labels_outside_sample"].value) == (3, 1)
        version = meta["annotation_set_version"].value

        # the automation: quiet for annotations and plan until the labels file changes, then annotations only
        _, cursor = _tick(defs, instance, None)  # the first evaluation records state
        requested, cursor = _tick(defs, instance, cursor)
        assert "annotations" not in requested and "plan" not in requested
        _write(labels, {"doc_id": train, "question": GAME_Q, "label": False},
               {"doc_id": heldout, "question": GENRE_Q, "spans": []},
               {"doc_id": outside, "question": GAME_Q, "label": False})
        changes = sync.sync_tasks(data_dir, instance)
        assert [(e.asset_key.to_user_string(), e.partition) for e in changes.events] == [("task_labels", TASK)]
        sync.apply(instance, changes)
        requested, cursor = _tick(defs, instance, cursor)
        assert requested.get("annotations") == {TASK} and "plan" not in requested

        # the re-run pays the LLM nothing (same human docs: the cached sub-tasks) and has a new data version
        CountingLLM.calls.clear()
        assert dg.materialize(_executable(defs), selection=[dg.AssetKey("annotations")], partition_key=TASK,
                              instance=instance, resources=defs.resources, run_config=NO_HEURISTIC).success
        assert CountingLLM.calls == []
        assert latest_metadata(instance, "annotations", TASK)["annotation_set_version"].value != version

        # a bad line fails the asset before any LLM call, naming the file, the line and the problem
        _write(labels, {"doc_id": train, "question": GAME_Q, "label": False}, {"doc_id": "debian:nethack",
                                                                           "question": GAME_Q, "label": True})
        failed = dg.materialize(_executable(defs), selection=[dg.AssetKey("annotations")], partition_key=TASK,
                                instance=instance, resources=defs.resources, run_config=NO_HEURISTIC,
                                raise_on_error=False)
        assert not failed.success and CountingLLM.calls == []
        (failure,) = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        description = failure.step_failure_data.user_failure_data.description
        assert description == (f"human labels {labels}: 1 bad line(s) of 2; fix or remove them (no label of the file "
                               f"is used until then):\n  {TASK}.labels.jsonl, line 2: unknown doc id 'debian:nethack': "
                               "not in corpus 'debian_packages'")
