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


def ensure_proxy_base(say=print) -> None:
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
        say("building the metamodel proxy base once (python -m falconer_assets.metamodel build; about 10-20 min "
            "on 2 CPU cores) ...")
        build_metamodel(log=lambda m: print(m, flush=True))


def run(data_dir: Path, force: list[str] | None = None, lock_wait_s: float | None = None,
        verbose: bool | None = None) -> bool:
    """Bring every task up to date (see module docstring); returns ``True`` when every run succeeded.

    The terminal shows one progress bar per stage (metamodel build, LLM calls, training steps, docs
    mined: counts, rate, ETA), a line per finished run and a summary table per task; everything
    libraries print goes to ``<data_dir>/logs/falconer-run-<time>.log``, named at the start and the end
    (:func:`falconer_assets.terminal.quiet_terminal`).

    Args:
        force: task names whose chain (plan, annotations, proxy_checkpoint, eval, and mining of
            every file, then its report) is re-materialized even if fresh; caches still apply (LLM calls,
            sub-task annotations, an unchanged proxy checkpoint).
        lock_wait_s: seconds to wait, before anything runs, while another process holds the warehouse or
            the LLM cache (default ``$FALCONER_LOCK_WAIT_S`` or 60).
        verbose: everything on the terminal, no bars (default: ``$FALCONER_VERBOSE`` set to 1).

    Raises:
        DatabaseLockedError: another process held the warehouse or the LLM cache for ``lock_wait_s`` seconds.
    """
    check_unlocked(data_dir, _lock_wait_default() if lock_wait_s is None else lock_wait_s)
    os.environ["FALCONER_DATA_DIR"] = str(data_dir)
    from tqdm import tqdm

    from falconer_assets.terminal import log_path, quiet_terminal

    verbose = os.environ.get("FALCONER_VERBOSE", "") == "1" if verbose is None else verbose
    log_file = log_path(data_dir)
    t0 = time.perf_counter()
    with quiet_terminal(log_file, verbose) as term:
        def say(message: str) -> None:
            tqdm.write(message, file=term)
            if not verbose:
                print(message, flush=True)  # into the log too

        if not verbose:
            say(f"falconer run: progress below; library and server logs in {log_file}")
        runs = _run_all(data_dir, force, say)
        ok = all(r.success for r in runs)
        say(f"\n{len(runs)} run(s), {'all succeeded' if ok else 'SOME FAILED'}, in {time.perf_counter() - t0:.0f} s "
            f"(Dagster instance: {os.environ['DAGSTER_HOME']})")
        for line in summary_lines(data_dir):
            say(line)
        if not verbose:
            say(f"full log: {log_file}")
    return ok


def _run_all(data_dir: Path, force: list[str] | None, say) -> list:
    from falconer_assets.assets.keys import MINED, REPORT, TASK_CHAIN
    from falconer_assets.definitions import build_definitions
    from falconer_assets.orchestrate import bring_up_to_date, describe_run, execute
    from falconer_assets.partitions import CORPUS_FILES, task_file_key

    ensure_proxy_base(say)
    instance = _instance(data_dir)
    defs = build_definitions(data_dir)
    runs = bring_up_to_date(defs, instance, data_dir, Path(os.environ["DAGSTER_HOME"]) / "falconer_automation_cursor",
                            log=say)
    for name in force or []:
        keys = [(sorted(TASK_CHAIN, key=lambda k: k.to_user_string()), name)]
        keys += [([MINED], str(task_file_key(name, f))) for f in instance.get_dynamic_partitions(CORPUS_FILES.name)]
        keys += [([REPORT], name)]
        for assets, partition in keys:
            runs.append(execute(defs, instance, assets, partition, "force"))
            say(describe_run(runs[-1]))
    return runs


def summary_lines(data_dir: Path) -> list[str]:
    """The end-of-run table, one row per task: rows mined, documents with a row, each sub-task's F1
    [95% interval] (n held-out docs), and the task's report page; ``[]`` before any warehouse exists."""
    from falconer_assets.report.html import eval_table
    from falconer_assets.warehouse.connect import connect
    from falconer_assets.warehouse.store import mined_totals, read_eval_metrics, task_names

    db = data_dir / "falconer.duckdb"
    if not db.exists():
        return []
    con = connect(db, read_only=True, wait_s=_lock_wait_default())
    try:
        rows = []
        for task in task_names(con):
            totals = mined_totals(con, task)
            f1s = "; ".join(
                f"{e['kind']} {e['f1']:.2f} [{e['low']:.2f}, {e['high']:.2f}] n={e['n']}" if e["low"] is not None
                else f"{e['kind']} {e['f1']:.2f} n={e['n']}"
                for e in eval_table(read_eval_metrics(con, task)) if e["f1"] is not None) or "no eval yet"
            page = data_dir / "reports" / f"{task}.html"
            rows.append((task, str(totals["rows"]), str(totals["docs"]), f1s, str(page) if page.exists() else "-"))
    finally:
        con.close()
    if not rows:
        return []
    head = ("task", "rows mined", "docs", "eval F1 [95% CI] (proxy vs annotator)", "report")
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return ["", fmt(head), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in rows),
            "", f"all rows: table `mined` in {db.resolve()}; `falconer report` prints every table"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``falconer`` console script; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="falconer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FALCONER_DATA_DIR", "data")))
    parser.add_argument("--lock-wait", type=float, default=None, metavar="SECONDS",
                        help="wait this long for another process holding the warehouse "
                             "(default $FALCONER_LOCK_WAIT_S or 60)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="run whatever is missing or stale, with progress bars, then a summary")
    p_run.add_argument("--force", action="append", metavar="TASK", help="re-materialize this task's chain too")
    p_run.add_argument("--verbose", action="store_true",
                       help="print every log line on the terminal instead of progress bars (or FALCONER_VERBOSE=1)")
    sub.add_parser("report", help="print the results already in the warehouse")
    args = parser.parse_args(argv)
    from falconer_assets.warehouse.connect import DatabaseLockedError

    ok = True
    try:
        if args.cmd == "run":
            ok = run(args.data_dir, args.force, lock_wait_s=args.lock_wait, verbose=args.verbose or None)
        elif args.cmd == "report":
            report(args.data_dir, lock_wait_s=args.lock_wait)
    except DatabaseLockedError as exc:  # a clear message, no traceback
        print(f"falconer: error: {exc}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
