"""Corpus reading with rejects, task files, seeded sampling, idempotent DuckDB writes, the mining loop."""

import json

import duckdb
import pytest

from falconer_assets.inputs.corpus import read_corpus
from falconer_assets.mining import mine_documents
from falconer_assets.plan.sandbox import validate_plan
from falconer_assets.generator.sampling import sample_size, sample_with_split
from falconer_assets.spans import Span
from falconer_assets.warehouse.tables import replace_rows
from falconer_assets.inputs.tasks import TaskError, load_task, load_tasks
from falconer_assets_tests.conftest import GAME_PLAN, REPO


def test_read_corpus_rejects_every_bad_line_with_its_reason(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "text": "Tux Racer is a racing game.", "section": "games"}),
        '{"id": "b", "text": "unterminated',
        json.dumps(["not", "an", "object"]),
        json.dumps({"text": "no id"}),
        json.dumps({"id": "c", "text": ""}),
        json.dumps({"id": "d", "text": 42}),
        "",
        json.dumps({"id": "a", "text": "duplicate"}),
        json.dumps({"id": "e", "text": "x" * 20_001}),
        json.dumps({"id": "f", "text": "Zürich café library"}),
    ]) + "\n", encoding="utf-8")
    docs, rejects = read_corpus(path)
    assert [d.id for d in docs] == ["a", "f"]
    assert docs[0].meta == {"section": "games"}
    reasons = {r.line_no: r.reason for r in rejects}
    assert reasons[2].startswith("invalid JSON")
    assert "JSON object" in reasons[3]
    assert "'id'" in reasons[4]
    assert reasons[5] == "empty text"
    assert "'text'" in reasons[6]
    assert reasons[8] == "duplicate id"
    assert "limit" in reasons[9]
    assert len(docs) + len(rejects) == 9  # every non-blank line accounted for


def test_bundled_tasks_load_and_bad_task_files_are_named(tmp_path):
    tasks = load_tasks(REPO / "data" / "tasks")
    assert {t.kind for t in tasks} == {"basic", "query-based", "multi-entity"}
    assert all(t.corpus == "debian_packages" and t.fields for t in tasks)
    bad = tmp_path / "oops.yaml"
    bad.write_text("name: other\ninstruction: x\ncorpus: c\nfields: [a]\n")
    with pytest.raises(TaskError, match="oops.yaml.*file stem"):
        load_task(bad)
    bad.write_text("name: oops\ninstruction: x\ncorpus: c\nkind: weird\nfields: [a]\n")
    with pytest.raises(TaskError, match="kind 'weird'"):
        load_task(bad)
    bad.write_text("name: oops\ncorpus: c\nfields: [a]\n")
    with pytest.raises(TaskError, match="'instruction'"):
        load_task(bad)


def test_sampling_is_seeded_order_free_and_split():
    assert sample_size(2000, 0.05, 40, 200) == 100
    assert sample_size(100, 0.05, 40, 200) == 40
    assert sample_size(30, 0.05, 40, 200) == 30
    with pytest.raises(ValueError):
        sample_size(10, 0.0, 1, 5)
    ids = [f"d{i}" for i in range(500)]
    a = sample_with_split(ids, 100, 0.25, seed=3)
    assert a == sample_with_split(list(reversed(ids)), 100, 0.25, seed=3)
    assert a != sample_with_split(ids, 100, 0.25, seed=4)
    assert len({i for i, _ in a}) == 100
    assert sum(s == "heldout" for _, s in a) == 25
    with pytest.raises(ValueError, match="cannot sample"):
        sample_with_split(ids[:5], 6, 0.2, 0)


def test_replace_rows_is_idempotent_and_atomic(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    row = {"task": "t", "kind": "label", "instruction": "q", "doc_id": "a", "split": "train", "tokens": 3}
    assert replace_rows(con, "annotations", "task", "t", [row, {**row, "doc_id": "b"}]) == 2
    replace_rows(con, "annotations", "task", "u", [{**row, "task": "u"}])
    assert replace_rows(con, "annotations", "task", "t", [row, {**row, "doc_id": "b"}]) == 2
    assert con.execute("SELECT task, count(*) FROM annotations GROUP BY task ORDER BY task").fetchall() == [
        ("t", 2), ("u", 1)]
    with pytest.raises(duckdb.Error):  # a bad row rolls the whole replacement back
        replace_rows(con, "annotations", "task", "t", [{**row, "tokens": "not an int"}])
    assert con.execute("SELECT count(*) FROM annotations WHERE task = 't'").fetchone()[0] == 2


def test_mine_documents_batches_and_rejects_only_failing_docs():
    from falconer_assets.inputs.corpus import Document

    docs = [Document(f"d{i}", t) for i, t in enumerate(
        ["Frozen Bubble is a puzzle game.", "libyaml-perl: a YAML parser.", "Wesnoth is a strategy game.", "BOOM"])]

    def get_label(texts, q):
        if "BOOM" in texts and len(texts) == 1:
            return [True, True]  # wrong length: a primitive failure the sandbox catches
        return ["game" in t for t in texts]

    def get_span(texts, q):
        out = []
        for t in texts:
            word = t.split()[-2]
            out.append([Span.of(t, t.index(word), t.index(word) + len(word), 0.9)])
        return out

    def get_label_batch(texts, q):
        if "BOOM" in texts:
            return get_label(["BOOM"], q)  # fails for any batch holding BOOM
        return get_label(texts, q)

    rows, rejects, stats = mine_documents(validate_plan(GAME_PLAN), docs, get_label_batch, get_span, batch_size=2)
    assert [(r.doc_id, r.value) for r in rows] == [("d0", "puzzle"), ("d2", "strategy")]
    assert all(docs[int(r.doc_id[1])].text[r.start:r.end] == r.value for r in rows)
    assert [r.doc_id for r in rejects] == ["d3"] and "returned 2 labels for 1 texts" in rejects[0].reason
    assert rejects[0].line_no is None
    assert (stats.docs_in, stats.docs_processed, stats.docs_retrieved, stats.docs_rejected) == (4, 3, 2, 1)
    assert stats.rows_per_field == {"genre": 2}


def test_write_mining_partition_replaces_one_task_file_slice_and_drops_pre_partition_rows(tmp_path):
    from falconer_assets.warehouse.rows import MinedRow, RejectRow, Throughput
    from falconer_assets.warehouse.store import write_mining_partition

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    row = {"doc_id": "d1", "field": "genre", "value": "puzzle", "start": 0, "end": 6, "score": 0.9}
    # a warehouse of an older version: mined a table, first without a file column (rows of task t), then
    # with one (task u); the first write moves both to Parquet parts and turns mined into a view
    con.execute('CREATE TABLE mined (task VARCHAR, doc_id VARCHAR, field VARCHAR, value VARCHAR, "start" INTEGER, '
                '"end" INTEGER, score DOUBLE)')
    con.execute("INSERT INTO mined VALUES ('t', 'd1', 'genre', 'puzzle', 0, 6, 0.9)")
    con.execute("ALTER TABLE mined ADD COLUMN file VARCHAR")
    con.execute("INSERT INTO mined VALUES ('u', 'd1', 'genre', 'puzzle', 0, 6, 0.9, 'c/a.jsonl')")
    replace_rows(con, "throughput", "task", "t", [{"task": "t", "executor": "proxy (full corpus)", "docs": 1}])
    speed = Throughput("proxy (c/a.jsonl)", docs=2, seconds=1.0)
    for _ in range(2):  # a re-run replaces, never duplicates
        write_mining_partition(con, "t", "c/a.jsonl", [MinedRow(**row), MinedRow(**{**row, "doc_id": "d2", "start": None,
                               "end": None})], [RejectRow("x", 3, "empty text")], speed)
    assert con.execute("SELECT task, file, doc_id FROM mined ORDER BY ALL").fetchall() == [
        ("t", "c/a.jsonl", "d1"), ("t", "c/a.jsonl", "d2"), ("u", "c/a.jsonl", "d1")]
    assert con.execute("SELECT executor, docs_per_s FROM throughput").fetchall() == [("proxy (c/a.jsonl)", 2.0)]
    assert con.execute("SELECT doc_id, line_no, reason FROM mining_rejects").fetchall() == [("x", 3, "empty text")]
    with pytest.raises(duckdb.Error):  # a bad row rolls the whole partition back
        write_mining_partition(con, "t", "c/a.jsonl", [MinedRow(**{**row, "start": "not a number"})], [], speed)
    assert con.execute("SELECT count(*) FROM mined WHERE task = 't'").fetchone() == (2,)
    # the rows are Parquet files beside the database, one per partition (plus the schema file)
    assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'mined'").fetchone() == (
        "VIEW",)
    parts = sorted(p.name for p in (tmp_path / "w.parts" / "mined").iterdir())
    assert len(parts) == 3 and "_schema.parquet" in parts  # (t, c/a.jsonl), (u, c/a.jsonl); (t, None) removed
    assert not list((tmp_path / "w.parts" / "mined").glob(".*"))  # no temporary file left behind
    con.close()
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as ro:  # a reader sees the same rows
        assert ro.execute("SELECT count(*) FROM mined").fetchone() == (3,)
