"""``falconer`` command: bring every task up to date on a persistent Dagster instance, print results.

    falconer run              # sync tasks/corpus files, then run whatever is missing or stale
    falconer run --force T    # also re-materialize task T's chain (plan..eval and its mining)
    falconer report           # print rows mined per task and the eval table from the warehouse
    falconer new T --corpus C "instruction" [--field name:description ...]   # write data/tasks/T.yaml
    falconer status           # each task's stages: fresh / stale / missing / failed / in progress
    falconer export T --format parquet|csv|jsonl [--out PATH]   # T's mined rows with their text snippets

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
    add_daily_commands(sub)
    args = parser.parse_args(argv)
    if args.cmd in DAILY_COMMANDS:
        return run_daily(args)
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


# ---- the daily loop: falconer new / status / export ---------------------------------------------

DAILY_COMMANDS = ("new", "plan", "status", "export")


def add_daily_commands(sub) -> None:
    """Register the ``new``, ``status`` and ``export`` sub-commands on ``sub`` (argparse subparsers)."""
    from falconer_assets.export import EXPORT_FORMATS
    from falconer_assets.inputs.tasks import TASK_KINDS

    p_new = sub.add_parser("new", help="write a validated task file data/tasks/<task>.yaml",
                           description="Write data/tasks/<task>.yaml, checked by the strict task loader. Without "
                                       "--field, the LLM planner names the fields and its plan is written beside "
                                       "the task as <task>.plan.py (used instead of the planner while it exists).")
    p_new.add_argument("task", help="task name: lowercase letters, digits, _")
    p_new.add_argument("instruction", help='what to mine, e.g. "Extract the license of each package"')
    p_new.add_argument("--corpus", required=True, help="a folder data/corpora/<corpus>/ with *.jsonl files")
    p_new.add_argument("--field", action="append", default=[], metavar="NAME:DESCRIPTION",
                       help="an output field (repeat for several); none: the planner names them")
    p_new.add_argument("--kind", choices=TASK_KINDS, default=None,
                       help="default: from the plan's shape when the planner runs, else basic")
    p_new.add_argument("--force", action="store_true", help="replace an existing task (and plan) file")
    p_plan = sub.add_parser("plan", help="ask the planner for a task's plan, print it and write data/tasks/<task>.plan.py",
                            description="The plan is written beside the task for review and editing; while the file "
                                        "exists the plan asset uses it instead of the planner.")
    p_plan.add_argument("task")
    p_plan.add_argument("--force", action="store_true", help="replace an existing <task>.plan.py")
    sub.add_parser("status", help="each task's stages: fresh / stale / missing / failed / in progress",
                   description="Each task's stages as the automation conditions see them now; runs nothing.")
    p_exp = sub.add_parser("export", help="write a task's mined rows (with text snippets) to a file")
    p_exp.add_argument("task")
    p_exp.add_argument("--format", choices=tuple(EXPORT_FORMATS), default="parquet", help="default parquet")
    p_exp.add_argument("--out", type=Path, default=None, help="default data/exports/<task>.<format>")
    p_exp.add_argument("--context", type=int, default=0, metavar="CHARS",
                       help="also write up to CHARS characters before and after each span")


def run_daily(args: argparse.Namespace) -> int:
    """Run ``falconer new|status|export`` from parsed ``args``; returns the exit code (2 with a one-line
    ``falconer: error: ...`` on stderr for a refused task, an existing file, nothing to export, a missing
    warehouse or a locked one)."""
    from falconer_assets.export import ExportError
    from falconer_assets.inputs.tasks import TaskError
    from falconer_assets.warehouse.connect import DatabaseLockedError

    try:
        if args.cmd == "new":
            new_task(args.data_dir, args.task, args.corpus, args.instruction, args.field, args.kind, force=args.force)
        elif args.cmd == "plan":
            plan_task(args.data_dir, args.task, force=args.force)
        elif args.cmd == "status":
            status(args.data_dir)
        else:
            export(args.data_dir, args.task, args.format, args.out, context_chars=args.context,
                   lock_wait_s=args.lock_wait)
    except (TaskError, FileExistsError, FileNotFoundError, ExportError, DatabaseLockedError) as exc:
        print(f"falconer: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _planner_llm(data_dir: Path):
    """The LLM ``falconer run`` uses (:func:`~falconer_assets.definitions.default_llm`), its cache in ``data_dir``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dagster's beta warnings while the code location's module loads
        from falconer_assets.definitions import default_llm

    llm = default_llm()
    if not llm.base_url and llm.cache_path == "data/llm_cache.duckdb":
        llm = llm.model_copy(update={"cache_path": str(data_dir / "llm_cache.duckdb")})
    return llm


def plan_task(data_dir: Path, name: str, *, force: bool = False, llm=None, out=None) -> str:
    """``falconer plan <task>``: the planner's plan for the task, printed and written to ``<task>.plan.py``
    (:func:`~falconer_assets.plan.planner.plan_for_task`).

    Args:
        llm: as for :func:`new_task` (default: the one ``falconer run`` uses, stopped afterwards).

    Returns:
        The text written.

    Raises:
        TaskError: the task file is missing or invalid, or the planner wrote no valid plan.
        FileExistsError: ``<task>.plan.py`` exists and ``force`` is false.
    """
    from falconer_assets.inputs.tasks import TASK_NAME_RE, TaskError, load_task
    from falconer_assets.plan.planner import PLANNER_MAX_TOKENS, plan_for_task
    from falconer_assets.plan.sandbox import PlanValidationError

    out = out or sys.stdout
    if not TASK_NAME_RE.fullmatch(name):
        raise TaskError(f"{name!r} is not a task name (lowercase letters, digits, _)")
    path = data_dir / "tasks" / f"{name}.yaml"
    if not path.is_file():
        raise TaskError(f"no task file {path}: write one with `falconer new`")
    task = load_task(path, data_dir)
    own = None
    if llm is None:
        own = llm = _planner_llm(data_dir)
    print(f"asking the planner ({llm.base_url or 'embedded ' + llm.model}) for a plan ...", file=out, flush=True)
    try:
        source, report = plan_for_task(task, lambda m, **p: llm.chat(m, max_tokens=PLANNER_MAX_TOKENS, **p).text,
                                       overwrite=force)
    except PlanValidationError as exc:
        raise TaskError(f"the planner wrote no valid plan for task {name!r}: {exc}") from exc
    finally:
        if own is not None:
            own.get_client().close()  # stops the embedded server if it was started
    print(f"wrote {report['path']} ({report['attempts']} planner call(s)); the plan asset uses it while it exists:\n",
          file=out)
    print(source.rstrip(), file=out)
    return source


def new_task(data_dir: Path, name: str, corpus: str, instruction: str, fields: list[str] | tuple[str, ...] = (),
             kind: str | None = None, *, force: bool = False, llm=None, out=None):
    """``falconer new``: write ``<data_dir>/tasks/<name>.yaml`` (see :func:`falconer_assets.authoring.write_task`).

    Args:
        fields: ``"name:description"`` strings; empty: the LLM planner names the fields and its plan is written
            to ``<name>.plan.py``.
        llm: the planner LLM, anything with ``chat(messages, max_tokens=...) -> result with .text`` (an
            ``LLMResource``); default: the one ``falconer run`` uses (:func:`~falconer_assets.definitions.default_llm`,
            the embedded model unless ``FALCONER_LLM_BASE_URL`` is set, its cache in ``<data_dir>``), stopped
            afterwards. Not used when ``fields`` are given.

    Returns:
        The :class:`~falconer_assets.authoring.NewTask` written.

    Raises:
        TaskError: a bad name, kind, field or instruction, an unknown corpus (naming the known ones), or no valid
            plan from the planner.
        FileExistsError: the task (or its plan file) exists and ``force`` is false.
    """
    from falconer_assets.authoring import parse_field, write_task
    from falconer_assets.plan.planner import PLANNER_MAX_TOKENS

    out = out or sys.stdout
    parsed = [parse_field(f) for f in fields]
    own = None
    if not parsed and llm is None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Dagster's beta warnings while the code location's module loads
            from falconer_assets.definitions import default_llm

        own = llm = default_llm()
        if not llm.base_url and llm.cache_path == "data/llm_cache.duckdb":
            own = llm = llm.model_copy(update={"cache_path": str(data_dir / "llm_cache.duckdb")})
        print(f"asking the planner ({llm.base_url or 'embedded ' + llm.model}) for a plan and its fields ...",
              file=out, flush=True)
    try:
        made = write_task(data_dir, name, corpus, instruction, parsed, kind, force=force,
                          chat=None if parsed else (lambda m, **p: llm.chat(m, max_tokens=PLANNER_MAX_TOKENS, **p).text))
    finally:
        if own is not None:
            own.get_client().close()  # stops the embedded server if it was started
    task = made.task
    print(f"wrote {made.path} (kind {task.kind}, corpus {task.corpus}, fields: "
          f"{', '.join(f.name for f in task.fields)})", file=out)
    if made.plan_path is not None:
        print(f"wrote {made.plan_path}: the planner's plan ({made.attempts} call(s)), used instead of the planner "
              f"while the file exists; review it:\n\n{made.plan.source.rstrip()}\n", file=out)
    elif task.plan_override_path.exists():
        print(f"note: {task.plan_override_path} exists and is used instead of the planner; delete it to re-plan",
              file=out)
    print("next: `falconer run` builds it, `falconer status` shows where it stands", file=out)
    return made


def status(data_dir: Path, out=None):
    """``falconer status``: print each task's stages (fresh / stale / missing / failed / in progress, the last
    materialization time and a note) as the automation conditions see them on the persistent instance
    (``$DAGSTER_HOME``, default ``<data_dir>/.dagster_home``) with the cursor ``falconer run`` saved there;
    executes nothing and leaves the cursor as it was (:func:`falconer_assets.status.task_status`).

    Returns:
        The :class:`~falconer_assets.status.StatusReport` printed.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dagster's beta/preview warnings while the code location loads
        from falconer_assets.definitions import build_definitions
        from falconer_assets.status import format_status, task_status

        instance = _instance(data_dir)
        try:
            defs = build_definitions(data_dir)
            result = task_status(defs, instance, data_dir, Path(os.environ["DAGSTER_HOME"]) / "falconer_automation_cursor")
        finally:
            instance.dispose()
    print(format_status(result), file=out or sys.stdout)
    return result


def export(data_dir: Path, task: str, fmt: str = "parquet", out_path: Path | None = None, *, context_chars: int = 0,
           lock_wait_s: float | None = None, out=None):
    """``falconer export``: write ``task``'s mined rows with ``snippet`` = ``text[start:end]`` (and, with
    ``context_chars``, ``context_before``/``context_after``) as ``fmt`` (parquet, csv, jsonl) to ``out_path``
    (default ``<data_dir>/exports/<task>.<fmt>``); see :func:`falconer_assets.export.export_mined`.

    Returns:
        The :class:`~falconer_assets.export.ExportResult`.

    Raises:
        FileNotFoundError: ``<data_dir>/falconer.duckdb`` does not exist yet.
        ExportError: an unknown task (the message lists the tasks) or nothing mined for it.
        DatabaseLockedError: another process held the warehouse for ``lock_wait_s`` seconds.
    """
    from falconer_assets.export import default_export_path, export_mined
    from falconer_assets.warehouse.connect import connect

    out = out or sys.stdout
    db = data_dir / "falconer.duckdb"
    if not db.exists():
        raise FileNotFoundError(f"{db} does not exist: run `falconer run` first")
    path = out_path or default_export_path(data_dir, task, fmt)
    known = sorted(p.stem for p in (data_dir / "tasks").glob("*.yaml"))
    con = connect(db, read_only=True, wait_s=_lock_wait_default() if lock_wait_s is None else lock_wait_s)
    try:
        result = export_mined(con, data_dir / "corpora", task, fmt, path, known_tasks=known, context_chars=context_chars)
    finally:
        con.close()
    print(f"wrote {result.rows} row(s) of task {task!r} from {result.docs} document(s) to {result.path}", file=out)
    if result.missing_text or result.changed_text:
        print(f"note: {result.missing_text} span row(s) have no snippet (document gone from its file) and "
              f"{result.changed_text} a snippet that differs from the mined value (file edited since it was mined: "
              f"`falconer run` re-mines it)", file=out)
    return result


if __name__ == "__main__":
    sys.exit(main())
