"""``falconer`` command: run the main job on a persistent Dagster instance and print the results.

    falconer run              # materialize every asset of every task (the main job)
    falconer run --task T     # only task T's chain (and its corpus sample)
    falconer report           # print rows mined per task and the eval table from the warehouse

The Dagster instance lives in ``$DAGSTER_HOME`` (default ``<data_dir>/.dagster_home``), so the
runs show up in ``dagster dev`` started with the same ``DAGSTER_HOME``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _instance(data_dir: Path):
    import dagster as dg

    home = Path(os.environ.setdefault("DAGSTER_HOME", str((data_dir / ".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    return dg.DagsterInstance.get()


def report(data_dir: Path, out=sys.stdout) -> None:
    """Print rows mined per task, rejects, the eval metrics and the speed table from the warehouse.

    Raises:
        FileNotFoundError: if ``<data_dir>/falconer.duckdb`` does not exist yet.
    """
    import duckdb

    db = data_dir / "falconer.duckdb"
    if not db.exists():
        raise FileNotFoundError(f"{db} does not exist: run `falconer run` first")
    con = duckdb.connect(str(db), read_only=True)
    print(f"\nResults in {db.resolve()} (tables: mined, mining_rejects, annotations, eval_metrics, throughput, plans)", file=out)
    print("\nRows mined per task:", file=out)
    print(con.sql("SELECT task, count(*) AS rows, count(DISTINCT doc_id) AS docs FROM mined GROUP BY task ORDER BY task"), file=out)
    print("Rejected input records per task:", file=out)
    print(con.sql("SELECT task, count(*) AS rejected FROM mining_rejects GROUP BY task ORDER BY task"), file=out)
    print("Eval: proxy vs annotator on held-out samples:", file=out)
    print(con.sql(
        "SELECT task, kind, instruction, any_value(n) AS n, "
        "round(max(value) FILTER (metric IN ('label_f1', 'span_f1')), 3) AS f1, "
        "round(max(value) FILTER (metric = 'word_f1'), 3) AS word_f1 "
        "FROM eval_metrics GROUP BY task, kind, instruction ORDER BY task, kind DESC, instruction"), file=out)
    print("Speed (same plan, same held-out docs; LLM time = original call latencies):", file=out)
    print(con.sql("SELECT task, executor, docs, round(seconds, 2) AS seconds, round(docs_per_s, 2) AS docs_per_s, tokens "
                  "FROM throughput ORDER BY task, executor"), file=out)
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


def run(data_dir: Path, task: str | None = None) -> bool:
    """Materialize the main job (or one task's chain); returns ``True`` on success."""
    os.environ["FALCONER_DATA_DIR"] = str(data_dir)
    import dagster as dg

    from falconer_assets.definitions import MAIN_JOB, build_definitions

    ensure_proxy_base()
    instance = _instance(data_dir)
    defs = build_definitions(data_dir)
    t0 = time.perf_counter()
    if task:
        selection = dg.AssetSelection.key_prefixes([task]).upstream()
        job = dg.define_asset_job(f"falconer_{task}", selection=selection)
        defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
        job_def = defs.resolve_job_def(f"falconer_{task}")
    else:
        job_def = defs.resolve_job_def(MAIN_JOB)
    result = job_def.execute_in_process(instance=instance, raise_on_error=False)
    print(f"\nrun {result.run_id} {'succeeded' if result.success else 'FAILED'} in {time.perf_counter() - t0:.0f} s "
          f"(Dagster instance: {os.environ['DAGSTER_HOME']})")
    return result.success


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``falconer`` console script; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="falconer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FALCONER_DATA_DIR", "data")))
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="materialize the main job and print the report")
    p_run.add_argument("--task", help="only this task's chain")
    sub.add_parser("report", help="print the results already in the warehouse")
    args = parser.parse_args(argv)
    ok = True
    if args.cmd == "run":
        ok = run(args.data_dir, args.task)
    report(args.data_dir)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
