"""``falconer`` command: bring every task up to date on a persistent Dagster instance, print results.

    falconer run              # sync tasks/corpus files, then run whatever is missing or stale
    falconer run --force T    # also re-materialize task T's chain (plan..eval and its mining)
    falconer report           # print rows mined per task and the eval table from the warehouse

``falconer run`` does in one process what ``dagster dev`` does with its sensors and automation
sensor (:func:`falconer_assets.orchestrate.bring_up_to_date`): a second run with nothing edited
executes nothing; after an instruction edit only that task's stale chain runs. The Dagster
instance lives in ``$DAGSTER_HOME`` (default ``<data_dir>/.dagster_home``), so the runs show up
in ``dagster dev`` started with the same ``DAGSTER_HOME``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path


def _instance(data_dir: Path):
    import dagster as dg

    home = Path(os.environ.setdefault("DAGSTER_HOME", str((data_dir / ".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    shipped = Path(__file__).resolve().parents[1] / "data" / ".dagster_home" / "dagster.yaml"
    if not config.exists() and shipped.exists():  # a DAGSTER_HOME elsewhere gets the shipped settings
        shutil.copyfile(shipped, config)
    return dg.DagsterInstance.get()


def _lock_wait_default() -> float:
    """``$FALCONER_LOCK_WAIT_S`` or :data:`~falconer_assets.warehouse.connect.DEFAULT_LOCK_WAIT_S` (seconds)."""
    from falconer_assets.warehouse.connect import DEFAULT_LOCK_WAIT_S

    return float(os.environ.get("FALCONER_LOCK_WAIT_S") or DEFAULT_LOCK_WAIT_S)


def check_unlocked(data_dir: Path, lock_wait_s: float) -> None:
    """Open and close the warehouse and the LLM cache of ``data_dir`` (those that exist) for writing, waiting
    up to ``lock_wait_s`` seconds for another process (``dagster dev``, another ``falconer run``) holding one.

    Raises:
        DatabaseLockedError: a file is still held after the wait (the message names it and the holder).
    """
    from falconer_assets.warehouse.connect import connect

    for db in (data_dir / "falconer.duckdb", data_dir / "llm_cache.duckdb"):
        if db.exists():
            connect(db, wait_s=lock_wait_s).close()


def report(data_dir: Path, out=sys.stdout, lock_wait_s: float | None = None) -> None:
    """Print rows mined per task, rejects, the eval metrics and the speed table from the warehouse.

    Args:
        lock_wait_s: seconds to wait while another process holds the warehouse (default
            ``$FALCONER_LOCK_WAIT_S`` or 60).

    Raises:
        FileNotFoundError: if ``<data_dir>/falconer.duckdb`` does not exist yet.
        DatabaseLockedError: another process held the warehouse for ``lock_wait_s`` seconds.
    """
    from falconer_assets.warehouse.connect import connect
    from falconer_assets.warehouse.store import report as report_tables

    db = data_dir / "falconer.duckdb"
    if not db.exists():
        raise FileNotFoundError(f"{db} does not exist: run `falconer run` first")
    con = connect(db, read_only=True, wait_s=_lock_wait_default() if lock_wait_s is None else lock_wait_s)
    print(f"\nResults in {db.resolve()} (tables: mined, mining_rejects, annotations, eval_metrics, throughput, plans; "
          f"the mined rows are Parquet files in {db.resolve().with_name(db.stem + '.parts')})", file=out)
    print(file=out)
    for title, relation in report_tables(con):
        print(title, file=out)
        print(relation, file=out)
    con.close()


def ensure_proxy_base() -> None:
    """Build the metamodel proxy base once (cached) when it is the configured default.

    The main job never pre-trains: ``proxy_checkpoint`` fails with the build command when
    the metamodel is missing. This CLI step builds it first (about 10-15 minutes on 2 CPU
    cores, once per recipe) so ``falconer run`` works on a fresh machine. Skipped when
    ``FALCONER_PROXY_BASE`` names another base.
    """
    if os.environ.get("FALCONER_PROXY_BASE", "").strip().lower() not in {"", "metamodel"}:
        return
    from falconer_assets.metamodel.pretrain import build_metamodel, is_built, metamodel_dir

    if not is_built(metamodel_dir()):
        print("building the metamodel proxy base once (python -m falconer_assets.metamodel build) ...", flush=True)
        build_metamodel(log=lambda m: print(m, flush=True))


def run(data_dir: Path, force: list[str] | None = None, lock_wait_s: float | None = None) -> bool:
    """Bring every task up to date (see module docstring); returns ``True`` when every run succeeded.

    Args:
        force: task names whose chain (plan, annotations, proxy_checkpoint, eval, and mining of
            every file, then its report) is re-materialized even if fresh; caches still apply (LLM calls,
            sub-task annotations, an unchanged proxy checkpoint).
        lock_wait_s: seconds to wait, before anything runs, while another process holds the warehouse or
            the LLM cache (default ``$FALCONER_LOCK_WAIT_S`` or 60).

    Raises:
        DatabaseLockedError: another process held the warehouse or the LLM cache for ``lock_wait_s`` seconds.
    """
    check_unlocked(data_dir, _lock_wait_default() if lock_wait_s is None else lock_wait_s)
    os.environ["FALCONER_DATA_DIR"] = str(data_dir)
    from falconer_assets.assets.keys import MINED, REPORT, TASK_CHAIN
    from falconer_assets.definitions import build_definitions
    from falconer_assets.orchestrate import bring_up_to_date, execute
    from falconer_assets.partitions import CORPUS_FILES, task_file_key

    ensure_proxy_base()
    instance = _instance(data_dir)
    defs = build_definitions(data_dir)
    t0 = time.perf_counter()
    runs = bring_up_to_date(defs, instance, data_dir, Path(os.environ["DAGSTER_HOME"]) / "falconer_automation_cursor")
    for name in force or []:
        runs.append(execute(defs, instance, sorted(TASK_CHAIN, key=lambda k: k.to_user_string()), name, "force"))
        for f in instance.get_dynamic_partitions(CORPUS_FILES.name):
            runs.append(execute(defs, instance, [MINED], str(task_file_key(name, f)), "force"))
        runs.append(execute(defs, instance, [REPORT], name, "force"))
    ok = all(r.success for r in runs)
    print(f"\n{len(runs)} run(s), {'all succeeded' if ok else 'SOME FAILED'}, in {time.perf_counter() - t0:.0f} s "
          f"(Dagster instance: {os.environ['DAGSTER_HOME']})")
    return ok


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``falconer`` console script; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="falconer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FALCONER_DATA_DIR", "data")))
    parser.add_argument("--lock-wait", type=float, default=None, metavar="SECONDS",
                        help="wait this long for another process holding the warehouse "
                             "(default $FALCONER_LOCK_WAIT_S or 60)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="run whatever is missing or stale, then print the report")
    p_run.add_argument("--force", action="append", metavar="TASK", help="re-materialize this task's chain too")
    sub.add_parser("report", help="print the results already in the warehouse")
    args = parser.parse_args(argv)
    from falconer_assets.warehouse.connect import DatabaseLockedError

    ok = True
    try:
        if args.cmd == "run":
            ok = run(args.data_dir, args.force, lock_wait_s=args.lock_wait)
        report(args.data_dir, lock_wait_s=args.lock_wait)
    except DatabaseLockedError as exc:  # a clear message, no traceback
        print(f"falconer: error: {exc}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
