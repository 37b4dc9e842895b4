"""Content-hash data versions and multi-file corpora (pure functions, no Dagster)."""

from __future__ import annotations

import json
from dataclasses import replace

from falconer_assets.inputs.corpus import corpus_file_paths, corpus_names, read_corpus_files
from falconer_assets.plan.sandbox import validate_plan
from falconer_assets.spans import Span
from falconer_assets.versions import digest, file_sha256, rows_version, task_spec_version
from falconer_assets.warehouse.rows import AnnotationRow, annotation_set_version, spans_to_json
from falconer_assets_tests.conftest import GAME_PLAN

ROW = AnnotationRow(kind="label", instruction="Is this package a game?", doc_id="pkg:0ad", split="train",
                    label=True, latency_s=1.5, raw="Yes", origin="sample")


def test_digest_ignores_dict_key_order_but_not_values():
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})
    assert len(digest("x")) == 16


def test_annotation_set_version_is_the_set_of_answers():
    other = replace(ROW, doc_id="pkg:bash", label=False)
    assert annotation_set_version([ROW, other]) == annotation_set_version([other, ROW])
    # bookkeeping columns do not count; the answer does
    assert annotation_set_version([replace(ROW, latency_s=9.0, raw="yes.", origin="random")]) == \
        annotation_set_version([ROW])
    assert annotation_set_version([replace(ROW, label=False)]) != annotation_set_version([ROW])
    assert annotation_set_version([replace(ROW, split="heldout")]) != annotation_set_version([ROW])


def test_annotation_set_version_hashes_spans_in_their_stored_json_form():
    text = "Frozen Bubble is a puzzle game."
    span_row = AnnotationRow("span", "What is the genre?", "pkg:fb", "train", spans=(Span.of(text, 19, 25),))
    # the hash input of one span row, spelled out: a warehouse written before the typed rows has this version
    legacy = digest([("span", "What is the genre?", "pkg:fb", "train", None,
                      '[{"start": 19, "end": 25, "text": "puzzle", "score": 1.0}]')])
    assert spans_to_json(span_row.spans) == '[{"start": 19, "end": 25, "text": "puzzle", "score": 1.0}]'
    assert annotation_set_version([span_row]) == legacy


def test_rows_version_is_order_free():
    assert rows_version([(1, "a"), (2, "b")]) == rows_version([(2, "b"), (1, "a")])
    assert rows_version([(1, "a")]) != rows_version([(1, "b")])


def test_plan_version_ignores_comments_and_whitespace_only():
    commented = "# reviewed\n" + GAME_PLAN.replace("    results = [None] * len(texts)",
                                                   "    results = [None] * len(texts)   # one slot per doc\n")
    assert validate_plan(commented).ast_hash == validate_plan(GAME_PLAN).ast_hash
    assert validate_plan(GAME_PLAN.replace("games", "kept")).ast_hash != validate_plan(GAME_PLAN).ast_hash


def test_task_spec_version_covers_the_yaml_and_the_plan_file(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\n")
    v0 = task_spec_version(spec)
    (tmp_path / "t.plan.py").write_text(GAME_PLAN)
    v1 = task_spec_version(spec)
    (tmp_path / "t.plan.py").write_text("# c\n" + GAME_PLAN)
    assert len({v0, v1, task_spec_version(spec)}) == 3
    assert file_sha256(spec) == file_sha256(spec)


def test_corpus_files_are_read_in_order_with_cross_file_duplicates_rejected(tmp_path):
    folder = tmp_path / "corpora" / "c"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text(json.dumps({"id": "1", "text": "one"}) + "\n" + "{bad\n")
    (folder / "b.jsonl").write_text(json.dumps({"id": "1", "text": "again"}) + "\n"
                                    + json.dumps({"id": "2", "text": "two"}) + "\n")
    (tmp_path / "corpora" / "empty").mkdir()
    assert corpus_names(tmp_path / "corpora") == ["c"]
    paths = corpus_file_paths(tmp_path / "corpora", "c")
    assert [p.name for p in paths] == ["a.jsonl", "b.jsonl"]
    docs, rejects = read_corpus_files(paths)
    assert [(d.id, d.text) for d in docs] == [("1", "one"), ("2", "two")]
    assert sorted((r.source, r.record_id, r.reason.split(":")[0]) for r in rejects) == [
        ("a.jsonl", None, "invalid JSON"), ("b.jsonl", "1", "duplicate id (first in a.jsonl)")]
    assert len(docs) + len(rejects) == 4
