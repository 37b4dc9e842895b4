"""Reads and writes of the typed rows (:mod:`falconer_assets.warehouse.rows`): every SQL statement
Falconer runs on its warehouse lives here or in :mod:`falconer_assets.warehouse.tables`.

Each writer replaces one slice (a task, a corpus, a cache key, a (task, file) partition) in one
transaction through :func:`~falconer_assets.warehouse.tables.replace_slices`, so a re-run never
duplicates rows and a failure keeps the old ones. Readers return typed rows, never tuples.
Connections are plain ``duckdb`` connections (the Dagster layer opens them from its resource); readers
never write, so they work on read-only connections and on a warehouse whose table does not exist yet
(an empty result).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone

import duckdb
import polars as pl

from falconer_assets.inputs.corpus import Reject
from falconer_assets.warehouse.rows import (
    AnnotationRow,
    MetricRow,
    MinedRow,
    PlanRecord,
    RejectRow,
    Throughput,
    spans_from_json,
    spans_to_json,
)
from falconer_assets.warehouse.tables import Slice, has_table, replace_rows, replace_slices, table_columns

_ANNOTATION_FIELDS = ("kind", "instruction", "doc_id", "split", "label", "spans", "dropped", "parse_ok", "raw",
                      "latency_s", "tokens", "origin")


# ---- corpus sample ------------------------------------------------------------------------------

def write_corpus_sample(conn: duckdb.DuckDBPyConnection, corpus: str, sample: Sequence[tuple[str, str]],
                        rejects: Sequence[Reject]) -> None:
    """Replace ``corpus``'s rows of ``corpus_sample`` (``(doc_id, split)`` pairs) and ``corpus_rejects``."""
    replace_slices(conn, [
        Slice("corpus_sample", {"corpus": corpus}, [{"corpus": corpus, "doc_id": i, "split": s} for i, s in sample]),
        Slice("corpus_rejects", {"corpus": corpus}, [
            {"corpus": corpus, "source": r.source, "line_no": r.line_no, "record_id": r.record_id,
             "reason": r.reason, "raw": r.raw} for r in rejects]),
    ])


def read_corpus_sample(conn: duckdb.DuckDBPyConnection, corpus: str) -> list[tuple[str, str]]:
    """The sampled ``(doc_id, split)`` pairs of ``corpus``, ordered by doc id (``[]`` if never sampled)."""
    if not has_table(conn, "corpus_sample"):
        return []
    return [(d, s) for d, s in conn.execute(
        "SELECT doc_id, split FROM corpus_sample WHERE corpus = ? ORDER BY doc_id", [corpus]).fetchall()]


# ---- plans --------------------------------------------------------------------------------------

def write_plan(conn: duckdb.DuckDBPyConnection, record: PlanRecord) -> None:
    """Replace the task's row of ``plans`` (``calls`` stored as JSON ``[{kind, instruction}]``)."""
    replace_rows(conn, "plans", "task", record.task, [{
        "task": record.task, "source": record.source, "ast_hash": record.ast_hash,
        "calls": json.dumps([{"kind": k, "instruction": i} for k, i in record.calls]), "origin": record.origin,
        "created_at": record.created_at or datetime.now(timezone.utc),
    }])


def read_plan(conn: duckdb.DuckDBPyConnection, task: str) -> PlanRecord | None:
    """The stored plan of ``task`` (``None`` if the ``plan`` asset never ran for it)."""
    if not has_table(conn, "plans"):
        return None
    row = conn.execute("SELECT task, source, ast_hash, calls, origin, created_at FROM plans WHERE task = ?",
                       [task]).fetchone()
    if row is None:
        return None
    calls = tuple((c["kind"], c["instruction"]) for c in json.loads(row[3] or "[]"))
    return PlanRecord(task=row[0], source=row[1], ast_hash=row[2], calls=calls, origin=row[4], created_at=row[5])


# ---- annotations --------------------------------------------------------------------------------

def _annotation_dict(r: AnnotationRow) -> dict:
    return {"kind": r.kind, "instruction": r.instruction, "doc_id": r.doc_id, "split": r.split, "label": r.label,
            "spans": spans_to_json(r.spans), "dropped": json.dumps(list(r.dropped), ensure_ascii=False),
            "parse_ok": r.parse_ok, "raw": r.raw, "latency_s": r.latency_s, "tokens": r.tokens, "origin": r.origin,
            "weight": r.weight}


def _annotation_row(values: tuple) -> AnnotationRow:
    d = dict(zip(_ANNOTATION_FIELDS + ("weight",), values))  # the sub-task cache has no weight column
    return AnnotationRow(
        kind=d["kind"], instruction=d["instruction"], doc_id=d["doc_id"], split=d["split"],
        label=None if d["label"] is None else bool(d["label"]), spans=spans_from_json(d["spans"]),
        dropped=tuple(json.loads(d["dropped"] or "[]")), parse_ok=bool(d["parse_ok"]),
        raw=d["raw"] or "", latency_s=float(d["latency_s"] or 0.0), tokens=int(d["tokens"] or 0), origin=d["origin"],
        weight=1.0 if d.get("weight") is None else float(d["weight"]))


def write_annotations(conn: duckdb.DuckDBPyConnection, task: str, rows: Sequence[AnnotationRow]) -> int:
    """Replace ``task``'s rows of ``annotations``; returns how many were written."""
    return replace_rows(conn, "annotations", "task", task, [{"task": task, **_annotation_dict(r)} for r in rows])


def read_annotations(conn: duckdb.DuckDBPyConnection, task: str, split: str | None = None) -> list[AnnotationRow]:
    """``task``'s annotations (of one ``split``, ``"train"`` or ``"heldout"``, or all), ordered by
    kind, instruction and doc id.

    ``"train"`` holds the corpus sample's training docs (every sub-task) and, per label sub-task,
    the extra docs the Appendix B heuristic picked (``origin`` other than ``"sample"``);
    ``"heldout"`` is the random corpus sample plus, when it was enlarged, the extra docs of the
    high-score stratum (``origin`` ``"heldout_stratum"``); each held-out row carries its weight.
    """
    if not has_table(conn, "annotations"):
        return []
    where, params = ("task = ?", [task]) if split is None else ("task = ? AND split = ?", [task, split])
    # a warehouse of an older version lacks later columns (origin, weight) until its next write
    have = table_columns(conn, "annotations")
    cols = ", ".join(c if c in have else "NULL" for c in _ANNOTATION_FIELDS + ("weight",))
    cur = conn.execute(f"SELECT {cols} FROM annotations WHERE {where} "
                       "ORDER BY kind, instruction, doc_id", params)
    return [_annotation_row(v) for v in cur.fetchall()]


def read_cached_subtask(conn: duckdb.DuckDBPyConnection, cache_key: str) -> list[AnnotationRow]:
    """The rows cached in ``subtask_annotations`` under ``cache_key``, ordered by origin then doc id
    (``[]`` when the sub-task was never annotated under that key)."""
    if not has_table(conn, "subtask_annotations"):
        return []
    cur = conn.execute(f"SELECT {', '.join(_ANNOTATION_FIELDS)} FROM subtask_annotations WHERE cache_key = ? "
                       "ORDER BY origin, doc_id", [cache_key])
    return [_annotation_row(v) for v in cur.fetchall()]


def write_cached_subtask(conn: duckdb.DuckDBPyConnection, cache_key: str, corpus: str,
                         rows: Sequence[AnnotationRow]) -> None:
    """Replace the ``subtask_annotations`` rows of ``cache_key`` with ``rows``."""
    replace_rows(conn, "subtask_annotations", "cache_key", cache_key,
                 [{"cache_key": cache_key, "corpus": corpus, **_annotation_dict(r)} for r in rows])


def read_cached_stratum(conn: duckdb.DuckDBPyConnection, cache_key: str) -> dict | None:
    """The held-out enlargement decision cached under ``cache_key`` (``HeldoutStratum.to_dict()``, or
    ``{}`` for "not enlarged"); ``None`` when nothing is cached."""
    if not has_table(conn, "heldout_strata"):
        return None
    row = conn.execute("SELECT stratum FROM heldout_strata WHERE cache_key = ?", [cache_key]).fetchone()
    return None if row is None else json.loads(row[0])


def write_cached_stratum(conn: duckdb.DuckDBPyConnection, cache_key: str, corpus: str, stratum: dict) -> None:
    """Replace the ``heldout_strata`` row of ``cache_key``."""
    replace_rows(conn, "heldout_strata", "cache_key", cache_key,
                 [{"cache_key": cache_key, "corpus": corpus, "stratum": json.dumps(stratum)}])


# ---- mining -------------------------------------------------------------------------------------

def write_mining_partition(conn: duckdb.DuckDBPyConnection, task: str, file: str, rows: Sequence[MinedRow],
                           rejects: Sequence[RejectRow], speed: Throughput) -> None:
    """Replace the rows of one mining partition (task, file) in ``mined``, ``mining_rejects`` and
    ``throughput`` in one transaction: a re-run replaces them, a failure keeps the old ones, other
    partitions are never touched. Rows written before corpora were partitioned by file (``file``
    NULL, executor ``proxy (full corpus)``) are dropped for the task too."""
    replace_slices(conn, [
        Slice("mined", {"task": task, "file": file}, [
            {"task": task, "file": file, "doc_id": r.doc_id, "field": r.field, "value": r.value,
             "start": r.start, "end": r.end, "score": r.score, "executor": r.executor} for r in rows]),
        Slice("mined", {"task": task, "file": None}),
        Slice("mining_rejects", {"task": task, "file": file}, [
            {"task": task, "file": file, "doc_id": r.doc_id, "line_no": r.line_no, "reason": r.reason}
            for r in rejects]),
        Slice("mining_rejects", {"task": task, "file": None}),
        Slice("throughput", {"task": task, "executor": speed.executor}, [_throughput_dict(task, speed)]),
        Slice("throughput", {"task": task, "executor": "proxy (full corpus)"}),
    ])


def _throughput_dict(task: str, t: Throughput) -> dict:
    return {"task": task, "executor": t.executor, "docs": t.docs, "seconds": t.seconds,
            "docs_per_s": t.docs_per_s, "tokens": t.tokens}


# ---- eval ---------------------------------------------------------------------------------------

def write_eval(conn: duckdb.DuckDBPyConnection, task: str, metrics: Sequence[MetricRow],
               speed: Sequence[Throughput]) -> None:
    """Replace ``task``'s rows of ``eval_metrics`` and its ``throughput`` rows of the executors in ``speed``,
    in one transaction."""
    replace_slices(conn, [
        Slice("eval_metrics", {"task": task}, [
            {"task": task, "kind": m.kind, "instruction": m.instruction, "n": m.n, "metric": m.metric,
             "value": float(m.value)} for m in metrics]),
        *(Slice("throughput", {"task": task, "executor": t.executor}, [_throughput_dict(task, t)]) for t in speed),
    ])


# ---- task report (the `report` asset) -----------------------------------------------------------

def read_eval_metrics(conn: duckdb.DuckDBPyConnection, task: str) -> list[MetricRow]:
    """``task``'s ``eval_metrics`` rows, in the order ``eval`` wrote them (empty before any eval)."""
    if not has_table(conn, "eval_metrics"):
        return []
    rows = conn.execute("SELECT kind, instruction, n, metric, value FROM eval_metrics WHERE task = ? "
                        "ORDER BY rowid", [task]).fetchall()
    return [MetricRow(kind, instruction, int(n), metric, float(value)) for kind, instruction, n, metric, value in rows]


def task_names(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Tasks with a plan, a mined row or an eval metric in the warehouse, sorted."""
    names: set[str] = set()
    for table in ("plans", "mined", "eval_metrics"):
        if has_table(conn, table):
            names |= {r[0] for r in conn.execute(f"SELECT DISTINCT task FROM {table}").fetchall()}
    return sorted(names)


def mined_totals(conn: duckdb.DuckDBPyConnection, task: str) -> dict[str, int]:
    """``{"rows", "docs", "files", "rejects"}`` of ``task``: mined rows, documents with a row, corpus
    files with a row, rejected records (``mining_rejects``); zeros before any mining."""
    out = {"rows": 0, "docs": 0, "files": 0, "rejects": 0}
    if has_table(conn, "mined"):
        rows, docs, files = conn.execute("SELECT count(*), count(DISTINCT doc_id), count(DISTINCT file) FROM mined "
                                         "WHERE task = ?", [task]).fetchone()
        out.update(rows=int(rows), docs=int(docs), files=int(files))
    if has_table(conn, "mining_rejects"):
        out["rejects"] = int(conn.execute("SELECT count(*) FROM mining_rejects WHERE task = ?", [task]).fetchone()[0])
    return out


def mined_value_counts(conn: duckdb.DuckDBPyConnection, task: str, top: int = 15) -> dict[str, list[tuple[str, int]]]:
    """Per field of ``task``'s mined rows, the ``top`` most frequent values with their row counts
    (ties by value), fields in name order; ``{}`` before any mining."""
    if not has_table(conn, "mined"):
        return {}
    rows = conn.execute(
        "SELECT field, value, n FROM (SELECT field, value, count(*) AS n, row_number() OVER "
        "(PARTITION BY field ORDER BY count(*) DESC, value) AS k FROM mined WHERE task = ? GROUP BY field, value) "
        "WHERE k <= ? ORDER BY field, n DESC, value", [task, top]).fetchall()
    out: dict[str, list[tuple[str, int]]] = {}
    for fld, value, n in rows:
        out.setdefault(fld, []).append((value, int(n)))
    return out


def sample_mined_docs(conn: duckdb.DuckDBPyConnection, task: str, n: int) -> list[str]:
    """Up to ``n`` ids of documents with mined rows for ``task``: those with a span row first, then
    the others, each group in a fixed pseudo-random order (``hash(doc_id)``), so a report shows the
    same documents on every run of the same rows."""
    if not has_table(conn, "mined") or n <= 0:
        return []
    rows = conn.execute(
        "SELECT doc_id FROM mined WHERE task = ? GROUP BY doc_id "
        "ORDER BY bool_or(start IS NOT NULL) DESC, hash(doc_id), doc_id LIMIT ?", [task, n]).fetchall()
    return [r[0] for r in rows]


def read_mined(conn: duckdb.DuckDBPyConnection, task: str, doc_ids: Sequence[str]) -> list[MinedRow]:
    """``task``'s mined rows of the documents ``doc_ids`` (ordered by document, then offset)."""
    if not has_table(conn, "mined") or not doc_ids:
        return []
    rows = conn.execute(
        'SELECT doc_id, field, value, start, "end", score, executor FROM mined WHERE task = ? AND doc_id IN '
        '(SELECT unnest(?::VARCHAR[])) ORDER BY doc_id, start NULLS FIRST, field', [task, list(doc_ids)]).fetchall()
    return [MinedRow(d, f, v, s, e, float(sc), ex or "proxy") for d, f, v, s, e, sc, ex in rows]


# ---- export (`falconer export`) -----------------------------------------------------------------

MINED_EXPORT_COLUMNS = ("task", "file", "doc_id", "field", "value", "start", "end", "score", "executor")
"""The columns of :func:`read_mined_frame`, in order."""


def read_mined_frame(conn: duckdb.DuckDBPyConnection, task: str) -> pl.DataFrame:
    """Every mined row of ``task`` as a polars frame with :data:`MINED_EXPORT_COLUMNS` (``start``/``end``:
    character offsets into the document text, null for boolean fields; ``score`` in [0, 1]), ordered by
    file, document, offset (nulls first) and field; an empty frame with those columns before any mining."""
    if not has_table(conn, "mined"):
        return pl.DataFrame(schema={"task": pl.Utf8, "file": pl.Utf8, "doc_id": pl.Utf8, "field": pl.Utf8,
                                    "value": pl.Utf8, "start": pl.Int32, "end": pl.Int32, "score": pl.Float64,
                                    "executor": pl.Utf8})
    return conn.execute(
        'SELECT task, file, doc_id, field, value, start, "end", score, coalesce(executor, \'proxy\') AS executor '
        'FROM mined WHERE task = ? ORDER BY file NULLS FIRST, doc_id, start NULLS FIRST, field, "end"',
        [task]).pl()


def mined_tasks(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The tasks with at least one mined row, sorted (``[]`` before any mining)."""
    if not has_table(conn, "mined"):
        return []
    return [r[0] for r in conn.execute("SELECT DISTINCT task FROM mined ORDER BY task").fetchall()]


# ---- report -------------------------------------------------------------------------------------

REPORT_QUERIES: tuple[tuple[str, str], ...] = (
    ("Rows mined per task:",
     "SELECT task, count(*) AS rows, count(DISTINCT doc_id) AS docs, count(DISTINCT file) AS files "
     "FROM mined GROUP BY task ORDER BY task"),
    ("Rejected input records per task:",
     "SELECT task, count(*) AS rejected FROM mining_rejects GROUP BY task ORDER BY task"),
    ("Eval: proxy vs annotator on held-out samples:",
     "SELECT task, kind, instruction, any_value(n) AS n, "
     "round(max(value) FILTER (metric IN ('label_f1', 'span_f1')), 3) AS f1, "
     "round(max(value) FILTER (metric = 'word_f1'), 3) AS word_f1 "
     "FROM eval_metrics GROUP BY task, kind, instruction ORDER BY task, kind DESC, instruction"),
    ("Speed (same plan, same held-out docs; LLM time = original call latencies):",
     "SELECT task, executor, docs, round(seconds, 2) AS seconds, round(docs_per_s, 2) AS docs_per_s, tokens "
     "FROM throughput ORDER BY task, executor"),
)
"""``(title, query)`` of each table ``falconer report`` prints."""


def report(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, duckdb.DuckDBPyRelation]]:
    """The report tables (:data:`REPORT_QUERIES`) as ``(title, relation)`` pairs, ready to print."""
    return [(title, conn.sql(query)) for title, query in REPORT_QUERIES]
