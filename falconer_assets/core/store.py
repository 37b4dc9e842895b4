"""DuckDB tables of a Falconer warehouse (``data/falconer.duckdb``) and idempotent writes.

Every write replaces the rows of one key (a task or a corpus) inside one transaction, so a
re-materialization never duplicates rows and a failure leaves the previous rows intact.
"""

from __future__ import annotations

import duckdb
import polars as pl

SCHEMA: dict[str, str] = {
    "corpus_sample": "corpus VARCHAR, doc_id VARCHAR, split VARCHAR",
    "corpus_rejects": "corpus VARCHAR, source VARCHAR, line_no INTEGER, record_id VARCHAR, reason VARCHAR, raw VARCHAR",
    "plans": "task VARCHAR, source VARCHAR, ast_hash VARCHAR, calls VARCHAR, origin VARCHAR, created_at TIMESTAMP",
    "annotations": (
        "task VARCHAR, kind VARCHAR, instruction VARCHAR, doc_id VARCHAR, split VARCHAR, label BOOLEAN, "
        "spans VARCHAR, dropped VARCHAR, parse_ok BOOLEAN, raw VARCHAR, latency_s DOUBLE, tokens INTEGER"
    ),
    "mined": 'task VARCHAR, doc_id VARCHAR, field VARCHAR, value VARCHAR, "start" INTEGER, "end" INTEGER, score DOUBLE',
    "mining_rejects": "task VARCHAR, doc_id VARCHAR, line_no INTEGER, reason VARCHAR",
    "eval_metrics": "task VARCHAR, kind VARCHAR, instruction VARCHAR, n INTEGER, metric VARCHAR, value DOUBLE",
    "throughput": "task VARCHAR, executor VARCHAR, docs INTEGER, seconds DOUBLE, docs_per_s DOUBLE, tokens INTEGER",
}


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create every table of :data:`SCHEMA` that does not exist yet."""
    for table, cols in SCHEMA.items():
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")


def replace_rows(
    conn: duckdb.DuckDBPyConnection, table: str, key_col: str, key: str, rows: list[dict]
) -> int:
    """Atomically replace all rows of ``table`` where ``key_col = key`` with ``rows``.

    Args:
        rows: dicts whose keys are exactly the table's columns (missing columns are NULL).

    Returns:
        The number of rows written.

    Raises:
        KeyError: if ``table`` is not in :data:`SCHEMA`; duckdb errors on a type mismatch
            (the transaction is rolled back and the old rows stay).
    """
    cols = [c.split()[0].strip('"') for c in SCHEMA[table].split(", ")]
    ensure_schema(conn)
    frame = pl.DataFrame([{c: r.get(c) for c in cols} for r in rows], schema=None) if rows else None
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(f"DELETE FROM {table} WHERE {key_col} = ?", [key])
        if frame is not None:
            conn.register("_falconer_rows", frame.to_arrow())
            quoted = ", ".join(f'"{c}"' for c in cols)
            conn.execute(f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM _falconer_rows")
            conn.unregister("_falconer_rows")
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return len(rows)
