"""``falconer run`` without a daemon: sync partitions, then evaluate the automation conditions and
execute what they request, tick after tick, until nothing is stale.

This is what ``dagster dev`` does with its sensors and the automation sensor, done in-process
so a single command brings the bundled tasks up to date (and re-running it is incremental:
a second ``falconer run`` with nothing edited executes nothing).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster_shared.serdes import deserialize_value, serialize_value

from falconer_assets import sync
from falconer_assets.assets.keys import MINED, PLAN


@dataclass
class RunSummary:
    """One executed run: its id, the asset keys it materialized, the partition, success, seconds."""

    run_id: str
    asset_keys: list[str]
    partition: str | None
    success: bool
    seconds: float
    trigger: str


def _group(result, keys) -> list[tuple[str | None, list[dg.AssetKey]]]:
    """Requested asset partitions -> runs: one per partition key, with every asset requested for it."""
    by_partition: dict[str | None, list[dg.AssetKey]] = defaultdict(list)
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        for partition in result.get_requested_partitions(key):
            by_partition[str(partition) if partition is not None else None].append(key)
    return sorted(by_partition.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))


def execute(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[dg.AssetKey], partition: str | None,
            trigger: str) -> RunSummary:
    """Materialize ``keys`` (one partition, or unpartitioned) in-process on ``instance``."""
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]
    t0 = time.perf_counter()
    result = dg.materialize(assets, selection=keys, partition_key=partition, instance=instance,
                            resources=defs.resources, raise_on_error=False, tags={"falconer/trigger": trigger})
    return RunSummary(result.run_id, [k.to_user_string() for k in keys], partition, result.success,
                      time.perf_counter() - t0, trigger)


def load_cursor(path: Path):
    """The automation cursor saved by the last :func:`bring_up_to_date` (``None`` the first time, or when
    the file is unreadable or holds something else).

    The cursor's class (``AssetDaemonCursor``) has no public import path, so it is read back with
    serdes' own type record instead of an ``as_type`` check, and recognised by its class name; this
    function is the only place that knows it.
    """
    try:
        cursor = deserialize_value(path.read_text())
    except (OSError, ValueError):
        return None
    return cursor if type(cursor).__name__ == "AssetDaemonCursor" else None


def bring_up_to_date(defs: dg.Definitions, instance: dg.DagsterInstance, data_dir: Path, cursor_path: Path,
                     log: Callable[[str], None] = print, max_ticks: int = 30) -> list[RunSummary]:
    """Sync task and corpus-file partitions, then execute what the automation conditions request.

    Each tick evaluates every asset's automation condition with the cursor of the previous tick
    (persisted at ``cursor_path``, so edits made between two calls are seen as changes) and
    runs the requested partitions, one run per partition key. Stops when a tick requests
    nothing, or after ``max_ticks``.

    Returns:
        The runs executed, in order. A failed run is reported and not retried in this call.
    """
    runs: list[RunSummary] = []
    folder = sync.load_valid_tasks(data_dir)  # read once for the whole sync
    task_sync = sync.sync_tasks(data_dir, instance, folder)
    sync.apply(instance, task_sync)
    for path, error in task_sync.errors.items():
        log(f"task file {path} left out: {error}")
    file_sync = sync.new_file_changes(data_dir, instance, folder)
    sync.apply(instance, file_sync)
    log(f"sync: tasks {task_sync.summary()}; corpus files {file_sync.summary()}")
    for req in file_sync.run_requests:
        runs.append(execute(defs, instance, [MINED], str(req.partition_key), "new_corpus_file"))
        log(_describe(runs[-1]))
    for name in sync.plans_built_from_other_specs(folder, instance):
        runs.append(execute(defs, instance, [PLAN], name, "plan_built_from_other_spec"))
        log(_describe(runs[-1]))
    asset_keys = defs.resolve_asset_graph().get_all_asset_keys()
    cursor = load_cursor(cursor_path)
    # Dagster's first evaluation with an empty cursor only records state (it requests nothing)
    first_tick_is_initial = cursor is None
    failed: set[tuple[str, str | None]] = set()
    for tick in range(max_ticks):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        cursor_path.write_text(serialize_value(cursor))
        groups = [(keys, p) for p, keys in _group(result, asset_keys)
                  if not any((key.to_user_string(), p) in failed for key in keys)]
        if not groups:
            if tick == 0 and first_tick_is_initial:
                continue
            break
        for keys, partition in groups:
            runs.append(execute(defs, instance, keys, partition, "automation"))
            log(_describe(runs[-1]))
            if not runs[-1].success:
                failed |= {(k.to_user_string(), partition) for k in keys}
    return runs


def _describe(run: RunSummary) -> str:
    status = "ok" if run.success else "FAILED"
    return f"run {run.run_id[:8]} {status} {run.seconds:6.1f} s  [{run.partition or '-'}] {', '.join(run.asset_keys)}"
