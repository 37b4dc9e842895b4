"""Mining partitions written at the same time by separate processes (issue 11, item 6): the mined rows are
Parquet files, one per partition, so two processes that each write their partition over and over through
the project's DuckDB resource (the `mined` asset's write path) never fail on DuckDB's single-writer lock,
and every partition ends with exactly its own rows."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import duckdb

ROUNDS = 15


def _writer(db: str, task: str, file: str, n_rows: int, errors) -> None:
    from dagster_duckdb import DuckDBResource

    from falconer_assets.warehouse.rows import MinedRow, RejectRow, Throughput
    from falconer_assets.warehouse.store import write_mining_partition

    resource = DuckDBResource(database=db)
    try:
        for round_ in range(ROUNDS):
            rows = [MinedRow(doc_id=f"{task}-{i}", field="genre", value=f"v{round_}", start=0, end=2, score=0.5)
                    for i in range(n_rows)]
            with resource.get_connection() as conn:  # retries while the other process holds the file
                write_mining_partition(conn, task, file, rows, [RejectRow(f"{task}-bad", 7, "empty text")],
                                       Throughput(f"proxy ({file})", n_rows, 1.0))
    except Exception as exc:  # reported to the parent, which fails the test with it
        errors.put(f"{task}: {type(exc).__name__}: {exc}")


def test_two_processes_write_their_partitions_concurrently(tmp_path: Path):
    db = str(tmp_path / "falconer.duckdb")
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(db, task, "c/a.jsonl", n, errors)) for task, n in (("t1", 300), ("t2", 200))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found
    assert all(p.exitcode == 0 for p in procs)
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT task, count(*), count(DISTINCT value), any_value(value) FROM mined "
                           "GROUP BY task ORDER BY task").fetchall() == [
            ("t1", 300, 1, f"v{ROUNDS - 1}"), ("t2", 200, 1, f"v{ROUNDS - 1}")]
        assert con.execute("SELECT task, count(*) FROM mining_rejects GROUP BY task ORDER BY task").fetchall() == [
            ("t1", 1), ("t2", 1)]
        assert con.execute("SELECT count(*) FROM throughput").fetchone() == (2,)
    assert not list((tmp_path / "falconer.parts" / "mined").glob(".*"))  # no temporary file left
