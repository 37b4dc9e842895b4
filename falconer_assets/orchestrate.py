"""``falconer run`` without a daemon: sync partitions, then evaluate the automation conditions and
execute what they request, tick after tick, until nothing is stale.

This is what ``dagster dev`` does with its sensors and the automation sensor, done in-process
so a single command brings the bundled tasks up to date (and re-running it is incremental:
a second ``falconer run`` with nothing edited executes nothing).
"""

from __future__ import annotations

import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster_shared.serdes import deserialize_value, serialize_value

from falconer_assets import sync
from falconer_assets.assets.keys import MINED, PLAN
from falconer_assets.osutil import pid_exists


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


RUN_PROCESS_TAG = "falconer/process"
"""Tag of every run :func:`execute` starts: ``<host>:<pid>:<process start time>`` of the process running
it in-process, so a later ``falconer run`` can tell a run whose process died (:func:`fail_dead_runs`)."""


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), which
    tells a reused pid from the original process; None when it does not exist (or no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def _alive(pid: int, start_time: str) -> bool:
    """Whether the process ``pid`` that started at ``start_time`` (``"?"``: unknown, no ``/proc``) still runs."""
    if start_time != "?":
        return _start_time(pid) == start_time
    return pid_exists(pid)


def process_tag(pid: int | None = None) -> str:
    """:data:`RUN_PROCESS_TAG`'s value for process ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def fail_dead_runs(instance: dg.DagsterInstance, log: Callable[[str], None] = print) -> list[str]:
    """Mark failed the runs still "in progress" whose process on this host is gone; returns their ids.

    A ``falconer run`` killed with ``kill -9`` (or a power cut) leaves its Dagster run STARTED for ever,
    and the automation's "not in progress" condition then never re-requests its partitions. This is
    what Dagster's run monitoring daemon does for a dead run worker; ``falconer run`` has no daemon, so
    it does it at start-up for the runs it tagged (:data:`RUN_PROCESS_TAG`): same host, and the pid is
    gone or now belongs to another process (start time differs). The failure event says why, so the
    run stays in the history. ``report_run_failed`` is not part of Dagster's public API; this function
    is the one place that calls it (docs/architecture.md, "Public Dagster APIs only").
    """
    host = socket.gethostname()
    in_progress = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=in_progress)):
        tag = run.tags.get(RUN_PROCESS_TAG, "")
        parts = tag.rsplit(":", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if _alive(int(parts[1]), parts[2]):
            continue
        instance.report_run_failed(run, message=f"the process that ran it ({tag}) is gone (killed or the machine "
                                                f"stopped); marked failed by falconer run so its partitions re-run")
        failed.append(run.run_id)
        log(f"run {run.run_id[:8]} was left in progress by a process that is gone: marked failed")
    return failed


def execute(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[dg.AssetKey], partition: str | None,
            trigger: str) -> RunSummary:
    """Materialize ``keys`` (one partition, or unpartitioned) in-process on ``instance``; the run is tagged
    with its trigger and :data:`RUN_PROCESS_TAG`."""
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]
    t0 = time.perf_counter()
    result = dg.materialize(assets, selection=keys, partition_key=partition, instance=instance,
                            resources=defs.resources, raise_on_error=False,
                            tags={"falconer/trigger": trigger, RUN_PROCESS_TAG: process_tag()})
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
    fail_dead_runs(instance, log)  # a killed earlier run must not block its partitions for ever
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
        log(describe_run(runs[-1]))
    for name in sync.plans_built_from_other_specs(folder, instance):
        runs.append(execute(defs, instance, [PLAN], name, "plan_built_from_other_spec"))
        log(describe_run(runs[-1]))
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
            log(describe_run(runs[-1]))
            if not runs[-1].success:
                failed |= {(k.to_user_string(), partition) for k in keys}
    return runs


def describe_run(run: RunSummary) -> str:
    """One line per run for the terminal: id, ok/FAILED, seconds, partition, asset keys."""
    status = "ok" if run.success else "FAILED"
    return f"run {run.run_id[:8]} {status} {run.seconds:6.1f} s  [{run.partition or '-'}] {', '.join(run.asset_keys)}"
