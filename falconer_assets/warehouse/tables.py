"""The DuckDB tables of a Falconer warehouse (``data/falconer.duckdb``) and idempotent slice writes.

Every write replaces the rows of one key (a task or a corpus) inside one transaction, so a
re-materialization never duplicates rows and a failure leaves the previous rows intact. The mined rows
and the mining rejects (:data:`PARQUET_TABLES`) are Parquet files, one per mining partition, in
``data/falconer.parts/`` beside the database, read through views of the same names: a partition is
written as a temporary file and renamed into place, so concurrent partitions never wait for DuckDB's
single writer and a reader sees a partition's old rows or its new ones, never half.

Crashes (``kill -9``, power loss) while a partition is written: its temporary files are flushed to disk
before they are renamed, the renames of one write are listed in a journal first, and the next write
connection (:func:`ensure_schema`) finishes the renames of a writer that died between them and removes the
temporary files a dead writer left (:func:`recover_parts`). So every partition holds the rows of exactly one
write, in ``mined`` and ``mining_rejects`` alike, and a re-run replaces them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from falconer_assets.osutil import fsync_path, pid_exists

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


PARQUET_TABLES: dict[str, tuple[str, ...]] = {"mined": ("task", "file"), "mining_rejects": ("task", "file")}
"""Tables kept as Parquet files beside the DuckDB file, one file per key (a mining partition), and read
through a DuckDB view of the same name: mining partitions write their rows without holding the
database's single-writer lock, so several can run at once, from several processes or machines
sharing the folder (issue 11). The value is the slice key every write of the table uses."""


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
    Columns are never dropped or retyped. The :data:`PARQUET_TABLES` of a file-backed database
    are views over their Parquet folder (:func:`parts_dir`); a warehouse that still holds them as
    tables has their rows moved to Parquet files, one per key, and the tables dropped. The Parquet folder
    is first recovered from writers that died (:func:`recover_parts`).
    """
    parts = parts_dir(conn)
    if parts is not None:
        recover_parts(parts)
    for table, cols in SCHEMA.items():
        if table in PARQUET_TABLES and parts is not None:
            _ensure_parquet_view(conn, table, parts / table)
            continue
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


def parts_dir(conn: duckdb.DuckDBPyConnection) -> Path | None:
    """The folder of the :data:`PARQUET_TABLES` of ``conn``'s database: ``<db file stem>.parts/`` beside
    the file (``data/falconer.duckdb`` -> ``data/falconer.parts/``); ``None`` for an in-memory
    database, whose tables stay in DuckDB."""
    row = conn.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    if not row or not row[0] or row[0] == ":memory:":
        return None
    db = Path(row[0])
    return db.with_name(db.stem + ".parts")


def part_path(folder: Path, key: dict[str, object]) -> Path:
    """The Parquet file of one key (e.g. ``{"task": ..., "file": ...}``) in a table's folder: a name
    derived from the key's values (any characters, ``None`` included, map to a safe file name)."""
    name = hashlib.sha256(json.dumps(list(key.items()), default=str).encode()).hexdigest()[:24]
    return folder / f"{name}.parquet"


def _select_typed(table: str, source: str | None) -> str:
    """``SELECT`` of ``table``'s columns cast to their types from ``source``; one row of NULLs without."""
    if source is None:
        return "SELECT " + ", ".join(f'CAST(NULL AS {t}) AS "{c}"' for c, t in _columns(SCHEMA[table]))
    cols = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in _columns(SCHEMA[table]))
    return f"SELECT {cols} FROM {source}"


def _ensure_parquet_view(conn: duckdb.DuckDBPyConnection, table: str, folder: Path) -> None:
    """Make ``table`` a view over ``folder/*.parquet`` (moving the rows of an old table there first).

    The folder always holds ``_schema.parquet`` (no rows, the table's columns and types), so the view
    has its columns before the first partition is written. The view names the folder by its absolute
    path; it is re-created on every write connection, so a moved data folder is picked up there.
    """
    folder.mkdir(parents=True, exist_ok=True)
    schema = folder / "_schema.parquet"
    if not schema.exists():
        _write_part(conn, table, schema, None)
    kind = conn.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = ? AND table_schema = current_schema() "
        "AND table_catalog = current_database()", [table]).fetchone()
    if kind is not None and kind[0] == "BASE TABLE":  # an older warehouse: its rows move to Parquet, one file per key
        key_cols = PARQUET_TABLES[table]
        have = table_columns(conn, table)
        select = ", ".join(f'"{c}"' if c in have else f'NULL AS "{c}"' for c, _ in _columns(SCHEMA[table]))
        keys = conn.execute(f"SELECT DISTINCT {', '.join(key_cols)} FROM {table}").fetchall()
        for values in keys:
            key = dict(zip(key_cols, values))
            where = " AND ".join(f'"{c}" IS NOT DISTINCT FROM ?' for c in key_cols)
            conn.execute(f"CREATE OR REPLACE TEMP TABLE _falconer_part AS SELECT {select} FROM {table} WHERE {where}",
                         list(values))
            _write_part(conn, table, part_path(folder, key), "_falconer_part")
        conn.execute("DROP TABLE IF EXISTS _falconer_part")
        conn.execute(f"DROP TABLE {table}")
    quoted = ", ".join(f'"{c}"' for c, _ in _columns(SCHEMA[table]))
    conn.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {quoted} FROM "
                 f"read_parquet('{folder.resolve()}/*.parquet', union_by_name = true)")


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
"""This machine's name as it appears in temporary part names (dots and other characters replaced)."""

STALE_TMP_AGE_S = 24 * 3600.0
"""A temporary part or journal older than this (seconds) is removed by :func:`recover_parts` even when its
writer's liveness cannot be checked (a writer on another machine sharing the folder)."""


def _staging_path(path: Path) -> Path:
    """A temporary name for ``path`` in its folder, unique to this machine, process and thread:
    ``.<stem>.<host>.<pid>.<thread>.tmp`` (hidden, and not ``*.parquet``: the views never read it)."""
    return path.with_name(f".{path.stem}.{_HOST}.{os.getpid()}.{threading.get_ident()}.tmp")


def _writer_of(name: str) -> tuple[str, int] | None:
    """``(host, pid)`` of the process that made the temporary file or journal ``name`` (see
    :func:`_staging_path`; names of older versions, ``.<stem>.<pid>[.<thread>].tmp``, are taken as this
    machine's), or ``None`` for a name that is not one."""
    old = re.fullmatch(r"\.[^.]+\.(?P<pid>\d+)(?:\.\d+)?\.tmp", name)
    if old is not None:
        return _HOST, int(old.group("pid"))
    m = re.fullmatch(r"\.[^.]+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.\d+\.(?:tmp|json)", name)
    return None if m is None else (m.group("host"), int(m.group("pid")))


def _dead_writer(entry: os.DirEntry, now: float) -> bool:
    """Whether the temporary file or journal ``entry`` belongs to a writer that is gone: a process of
    this machine that no longer exists, or any file older than :data:`STALE_TMP_AGE_S`."""
    writer = _writer_of(entry.name)
    if writer is None:
        return False
    host, pid = writer
    if host == _HOST and pid != os.getpid() and not pid_exists(pid):
        return True
    try:
        return now - entry.stat().st_mtime > STALE_TMP_AGE_S
    except FileNotFoundError:
        return False


def recover_parts(parts: Path) -> dict[str, int]:
    """Repair the Parquet folder ``parts`` (:func:`parts_dir`) after writers that died mid-write.

    1. A journal (``.journal.<host>.<pid>.<thread>.json``, written by :func:`replace_slices` after every
       temporary part of a write was on disk and its DuckDB slices committed, before its renames) whose
       writer is gone is rolled forward: each listed temporary file that still exists is renamed onto its
       part, each part listed without one (no rows) is removed; then the journal is removed. An unreadable
       (half-written) journal means the renames had not begun: it is removed.
    2. Every temporary part (``.<stem>.<host>.<pid>.<thread>.tmp``) of a writer that is gone is removed.

    A writer is gone when it ran on this machine and its process no longer exists, or when its file is
    older than :data:`STALE_TMP_AGE_S`. Files of live writers are never touched. Cheap when there is
    nothing to do (one directory listing per table folder). Safe to run from several processes at once.

    Returns:
        ``{"rolled_forward": journals completed, "removed": temporary files removed}``.
    """
    done = {"rolled_forward": 0, "removed": 0}
    if not parts.is_dir():
        return done
    now = time.time()
    with os.scandir(parts) as it:
        journals = [e for e in it if e.name.startswith(".journal.") and e.name.endswith(".json")]
    for entry in journals:
        if not _dead_writer(entry, now):
            continue
        try:
            moves = json.loads(Path(entry.path).read_text())
        except FileNotFoundError:
            continue  # another process recovered it
        except ValueError:
            moves = []  # half-written: written before any rename, so nothing to finish
        for tmp, dest in moves:
            try:
                if tmp is not None:
                    os.replace(tmp, dest)
                else:
                    Path(dest).unlink(missing_ok=True)
            except FileNotFoundError:
                pass  # renamed before the crash (or by another recovering process)
        Path(entry.path).unlink(missing_ok=True)
        done["rolled_forward"] += 1
    for folder in [parts, *(p for p in parts.iterdir() if p.is_dir())]:
        with os.scandir(folder) as it:
            stale = [e for e in it if e.name.startswith(".") and e.name.endswith(".tmp") and _dead_writer(e, now)]
        for entry in stale:
            try:
                os.unlink(entry.path)
                done["removed"] += 1
            except FileNotFoundError:
                pass
    return done


def _copy_part(conn: duckdb.DuckDBPyConnection, table: str, source: str | None, dest: Path) -> None:
    """Write the rows of ``source`` (a table or registered relation; ``None``: no rows), cast to ``table``'s
    types, as the Parquet file ``dest``, flushed to disk; on failure ``dest`` is removed and the error raised."""
    query = f"{_select_typed(table, None)} LIMIT 0" if source is None else _select_typed(table, source)
    try:
        conn.execute(f"COPY ({query}) TO '{dest}' (FORMAT parquet)")
        fsync_path(dest)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _write_part(conn: duckdb.DuckDBPyConnection, table: str, path: Path, source: str | None) -> None:
    """Write the rows of ``source`` as ``path``, atomically (a temporary file on disk, then a rename)."""
    tmp = _staging_path(path)
    _copy_part(conn, table, source, tmp)
    os.replace(tmp, path)
    fsync_path(path.parent, directory=True)


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
    is replaced or, on any error, none is and the old rows stay. A slice of a
    :data:`PARQUET_TABLES` table (file-backed database) is its key's Parquet file: written to a
    temporary file first (flushed to disk), renamed into place once the DuckDB slices have committed
    (no rows: the file is removed). The renames are listed in a journal before the first one, so a
    writer that dies between them has its write finished by the next :func:`ensure_schema`
    (:func:`recover_parts`): a partition's tables never stay at different versions.

    Returns:
        The number of rows written per slice.

    Raises:
        KeyError: a table not in :data:`SCHEMA`; ValueError: a Parquet table's slice keyed by other
            columns than :data:`PARQUET_TABLES` names; duckdb errors on a type mismatch (rolled back,
            no Parquet file changed).
    """
    ensure_schema(conn)
    parts = parts_dir(conn)
    frames = []
    for sl in slices:
        cols = [name for name, _ in _columns(SCHEMA[sl.table])]
        if sl.table in PARQUET_TABLES and parts is not None and tuple(sl.key) != PARQUET_TABLES[sl.table]:
            raise ValueError(f"a slice of {sl.table} is keyed by {PARQUET_TABLES[sl.table]}, got {tuple(sl.key)}")
        frames.append((cols, pl.DataFrame([{c: r.get(c) for c in cols} for r in sl.rows], infer_schema_length=None)
                       if sl.rows else None))
    staged: list[tuple[Path | None, Path]] = []  # (written temporary file or None for "no rows", part file)
    try:
        for sl, (cols, frame) in zip(slices, frames):
            if sl.table in PARQUET_TABLES and parts is not None:
                path = part_path(parts / sl.table, sl.key)
                tmp = None
                if frame is not None:
                    tmp = _staging_path(path)
                    conn.register("_falconer_rows", frame.to_arrow())
                    try:
                        _copy_part(conn, sl.table, "_falconer_rows", tmp)
                    finally:
                        conn.unregister("_falconer_rows")
                staged.append((tmp, path))
        conn.execute("BEGIN TRANSACTION")
        try:
            for sl, (cols, frame) in zip(slices, frames):
                if sl.table in PARQUET_TABLES and parts is not None:
                    continue
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
    except Exception:
        for tmp, _ in staged:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        raise
    if staged:  # the DuckDB slices committed: the Parquet parts follow, journalled, each an atomic rename
        journal = _staging_path(parts / "journal").with_suffix(".json")
        journal.write_text(json.dumps([[None if tmp is None else os.path.abspath(tmp), os.path.abspath(path)]
                                       for tmp, path in staged]))
        fsync_path(journal)
        fsync_path(parts, directory=True)
        for tmp, path in staged:
            if tmp is not None:
                os.replace(tmp, path)
            else:
                path.unlink(missing_ok=True)
        for folder in {path.parent for _, path in staged}:
            fsync_path(folder, directory=True)
        journal.unlink()
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
