"""The DuckDB tables of a Falconer warehouse (``data/falconer.duckdb``) and idempotent slice writes.

Every write replaces the rows of one key (a task or a corpus) inside one transaction, so a
re-materialization never duplicates rows and a failure leaves the previous rows intact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import polars as pl

SCHEMA: dict[str, str] = {
    "corpus_sample": "corpus VARCHAR, doc_id VARCHAR, split VARCHAR",
    "corpus_rejects": "corpus VARCHAR, source VARCHAR, line_no INTEGER, record_id VARCHAR, reason VARCHAR, raw VARCHAR",
    "plans": "task VARCHAR, source VARCHAR, ast_hash VARCHAR, calls VARCHAR, origin VARCHAR, created_at TIMESTAMP",
    "annotations": (
        "task VARCHAR, kind VARCHAR, instruction VARCHAR, doc_id VARCHAR, split VARCHAR, label BOOLEAN, "
        "spans VARCHAR, dropped VARCHAR, parse_ok BOOLEAN, raw VARCHAR, latency_s DOUBLE, tokens INTEGER, "
        "origin VARCHAR, weight DOUBLE"
    ),
    "subtask_annotations": (
        "cache_key VARCHAR, corpus VARCHAR, kind VARCHAR, instruction VARCHAR, doc_id VARCHAR, split VARCHAR, "
        "label BOOLEAN, spans VARCHAR, dropped VARCHAR, parse_ok BOOLEAN, raw VARCHAR, latency_s DOUBLE, "
        "tokens INTEGER, origin VARCHAR"
    ),
    "heldout_strata": "cache_key VARCHAR, corpus VARCHAR, stratum VARCHAR",
    "mined": (
        'task VARCHAR, doc_id VARCHAR, field VARCHAR, value VARCHAR, "start" INTEGER, "end" INTEGER, score DOUBLE, '
        "file VARCHAR, executor VARCHAR"
    ),
    "mining_rejects": "task VARCHAR, doc_id VARCHAR, line_no INTEGER, reason VARCHAR, file VARCHAR",
    "eval_metrics": "task VARCHAR, kind VARCHAR, instruction VARCHAR, n INTEGER, metric VARCHAR, value DOUBLE",
    "throughput": "task VARCHAR, executor VARCHAR, docs INTEGER, seconds DOUBLE, docs_per_s DOUBLE, tokens INTEGER",
}


def _columns(cols: str) -> list[tuple[str, str]]:
    """``"a VARCHAR, \"b\" INTEGER"`` -> ``[("a", "VARCHAR"), ("b", "INTEGER")]``."""
    out = []
    for col in cols.split(", "):
        name, typ = col.split(maxsplit=1)
        out.append((name.strip('"'), typ))
    return out


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create every table of :data:`SCHEMA` that does not exist yet, and add missing columns.

    A warehouse written by an older version (e.g. ``annotations`` without ``origin``) is
    migrated in place with ``ALTER TABLE ... ADD COLUMN``; existing rows get ``NULL`` there.
    Columns are never dropped or retyped.
    """
    for table, cols in SCHEMA.items():
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
        have = table_columns(conn, table)
        for name, typ in _columns(cols):
            if name not in have:
                conn.execute(f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "{name}" {typ}')


def has_table(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    """True when ``table`` exists in the connection's current schema (works on read-only connections)."""
    return conn.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = ? AND table_schema = current_schema() AND table_catalog = current_database()",
        [table]).fetchone()[0] > 0


def table_columns(conn: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """The column names of ``table`` (a warehouse written by an older version may lack some of
    :data:`SCHEMA` until its next write; works on read-only connections)."""
    return {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = ? AND table_schema = current_schema() AND table_catalog = current_database()",
        [table]).fetchall()}


@dataclass(frozen=True)
class Slice:
    """The rows of ``table`` whose ``key`` columns equal the given values (``None`` matches NULL),
    to be replaced by ``rows`` (dicts keyed by column; missing columns are NULL)."""

    table: str
    key: dict[str, object]
    rows: list[dict] = field(default_factory=list)


def replace_slices(conn: duckdb.DuckDBPyConnection, slices: list[Slice]) -> list[int]:
    """Atomically replace several slices, possibly of several tables, in one transaction.

    Each slice's old rows are deleted (``col IS NOT DISTINCT FROM value`` for every key
    column, so a ``None`` value selects NULLs) and its new rows inserted. Either every slice
    is replaced or, on any error, none is and the old rows stay.

    Returns:
        The number of rows written per slice.

    Raises:
        KeyError: a table not in :data:`SCHEMA`; duckdb errors on a type mismatch (rolled back).
    """
    ensure_schema(conn)
    frames = []
    for sl in slices:
        cols = [name for name, _ in _columns(SCHEMA[sl.table])]
        frames.append((cols, pl.DataFrame([{c: r.get(c) for c in cols} for r in sl.rows], infer_schema_length=None)
                       if sl.rows else None))
    conn.execute("BEGIN TRANSACTION")
    try:
        for sl, (cols, frame) in zip(slices, frames):
            where = " AND ".join(f'"{c}" IS NOT DISTINCT FROM ?' for c in sl.key)
            conn.execute(f"DELETE FROM {sl.table} WHERE {where}", list(sl.key.values()))
            if frame is not None:
                conn.register("_falconer_rows", frame.to_arrow())
                quoted = ", ".join(f'"{c}"' for c in cols)
                conn.execute(f"INSERT INTO {sl.table} ({quoted}) SELECT {quoted} FROM _falconer_rows")
                conn.unregister("_falconer_rows")
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return [len(sl.rows) for sl in slices]


def replace_rows(conn: duckdb.DuckDBPyConnection, table: str, key_col: str, key: str, rows: list[dict]) -> int:
    """Atomically replace all rows of ``table`` where ``key_col = key`` with ``rows``
    (one :class:`Slice` through :func:`replace_slices`).

    Args:
        rows: dicts whose keys are exactly the table's columns (missing columns are NULL).

    Returns:
        The number of rows written.

    Raises:
        KeyError: if ``table`` is not in :data:`SCHEMA`; duckdb errors on a type mismatch
            (the transaction is rolled back and the old rows stay).
    """
    return replace_slices(conn, [Slice(table, {key_col: key}, rows)])[0]
