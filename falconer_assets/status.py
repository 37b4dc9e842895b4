"""``falconer status``: each task's stages as fresh / stale / missing / failed / in progress, without running
anything.

"Stale" is what the automation would run now: the same automation conditions the daemon and ``falconer
run`` evaluate (:mod:`falconer_assets.automation`), evaluated with ``dg.evaluate_automation_conditions`` on
the persistent instance and the cursor ``falconer run`` saved (:func:`~falconer_assets.orchestrate.load_cursor`),
plus what ``falconer run`` re-plans before its first tick
(:func:`~falconer_assets.sync.plans_built_from_other_specs`) and the files the re-mine schedule would re-mine
(:func:`~falconer_assets.sync.changed_file_changes`). The new cursor is *not* saved, so the next
``falconer run`` still sees every change as a change. "Missing", "failed" and "in progress" are the
partition's status on the instance (never materialized; its last run failed, which the conditions do not
retry; a run is materializing it): the same facts the conditions' ``missing``, ``execution_failed`` and
``in_progress`` read.

Like the task sensor, status first reports edited task files to the instance (``task_spec``
materializations, new and deleted task partitions: :func:`~falconer_assets.sync.sync_tasks`); new corpus files
are *not* registered (their mining requests belong to the next ``falconer run`` or the corpus sensor) and
show as missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from falconer_assets import sync
from falconer_assets.assets.keys import ANNOTATIONS, EVAL, MINED, PLAN, PROXY_CHECKPOINT, REPORT, TASK_SPEC
from falconer_assets.orchestrate import load_cursor
from falconer_assets.partitions import CORPUS_FILES, TASK_FILE_PARTITIONS, TASKS, split_file_key, task_file_key

STAGES = (PLAN, ANNOTATIONS, PROXY_CHECKPOINT, EVAL, MINED, REPORT)
"""The stages shown per task, in lineage order (``mined``: one line per corpus file of the task's corpus)."""
STATES = ("fresh", "stale", "missing", "failed", "in progress")
PARENTS: dict[str, tuple[str, ...]] = {
    "annotations": ("plan",), "proxy_checkpoint": ("annotations",), "eval": ("annotations", "proxy_checkpoint"),
    "mined": ("plan", "proxy_checkpoint"), "report": ("mined", "eval"),
}
"""Each stage's parents among :data:`STAGES` (for the "after ..." notes)."""


@dataclass(frozen=True)
class StageStatus:
    """One stage of one task.

    Attributes:
        task: the task name.
        stage: the asset key (``"plan"``, ``"annotations"``, ``"proxy_checkpoint"``, ``"eval"``, ``"mined"``,
            ``"report"``).
        file: the corpus file key (``<corpus>/<name>.jsonl``) for ``mined``, else ``None``.
        state: one of :data:`STATES`.
        last_materialized: when the partition was last materialized (UTC), ``None`` if never.
        note: why, when there is more to say (``""`` otherwise).
    """

    task: str
    stage: str
    file: str | None
    state: str
    last_materialized: datetime | None
    note: str = ""

    @property
    def label(self) -> str:
        """``stage``, or ``mined <file name>`` for a mining partition."""
        return self.stage if self.file is None else f"mined {split_file_key(self.file)[1]}"


@dataclass
class StatusReport:
    """What :func:`task_status` found.

    Attributes:
        stages: every task's stages, tasks in name order, stages in :data:`STAGES` order.
        corpora: ``{task: corpus}``.
        errors: ``{task file path: error}`` of task files left out (malformed).
        cursor_found: whether ``falconer run`` had saved an automation cursor (without one, edits made
            before now cannot be told apart and only missing and failed stages show).
    """

    stages: list[StageStatus] = field(default_factory=list)
    corpora: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    cursor_found: bool = False

    def state(self, task: str, stage: str, file: str | None = None) -> StageStatus:
        """The status of one stage (``file``: the corpus file key, for ``mined``).

        Raises:
            KeyError: no such task, stage or file.
        """
        for s in self.stages:
            if (s.task, s.stage, s.file) == (task, stage, file):
                return s
        raise KeyError((task, stage, file))


CODE_VERSION_TAG = "dagster/code_version"
"""Tag of a materialization holding the asset's ``code_version`` when it ran (Dagster's ``CODE_VERSION_TAG``)."""


def _last_materialized(instance: dg.DagsterInstance, key: dg.AssetKey,
                       partition: str) -> tuple[datetime | None, str | None]:
    """``(time (UTC), code version)`` of the latest materialization of one partition; ``(None, None)`` if none."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    if not records:
        return None, None
    tags = records[0].asset_materialization.tags or {}
    return datetime.fromtimestamp(records[0].timestamp, tz=timezone.utc), tags.get(CODE_VERSION_TAG)


def _partition_states(instance: dg.DagsterInstance, key: dg.AssetKey, partitions: list[str],
                      partitions_def: dg.PartitionsDefinition) -> dict[str, str | None]:
    """``{partition: "in progress" | "failed" | None (materialized) | "missing"}`` from the instance."""
    if not partitions:
        return {}
    by_partition = instance.get_status_by_partition(key, partitions, partitions_def)
    if by_partition is None:  # no status cache for this partitions definition: materialized or not only
        done = set(instance.get_materialized_partitions(key))
        return {p: None if p in done else "missing" for p in partitions}
    names = {dg.AssetPartitionStatus.IN_PROGRESS: "in progress", dg.AssetPartitionStatus.FAILED: "failed",
             dg.AssetPartitionStatus.MATERIALIZED: None}
    return {p: names[s] if s is not None else "missing" for p, s in by_partition.items()}


@contextmanager
def partitions_read_once(instance: dg.DagsterInstance) -> Iterator[None]:
    """Within the block, ``instance.get_dynamic_partitions`` answers from memory after the first query of each
    partitions definition; restored on exit.

    ``dg.evaluate_automation_conditions`` asks the instance for the same dynamic partitions about a thousand
    times per evaluation (most of them while it builds the new cursor): 5 s of SQLite queries per evaluation
    with two tasks on 2 busy cores, 0.3-0.9 s with this. Status adds or deletes no partition meanwhile. The
    public method is shadowed on this one object only (an instance attribute); this is the only place that
    does it (docs/architecture.md, "Public Dagster APIs only").
    """
    original = instance.get_dynamic_partitions
    shadowed = "get_dynamic_partitions" in vars(instance)  # already inside such a block
    keys: dict[str, list[str]] = {}

    def get_dynamic_partitions(partitions_def_name: str) -> list[str]:
        if partitions_def_name not in keys:
            keys[partitions_def_name] = list(original(partitions_def_name))
        return list(keys[partitions_def_name])

    instance.get_dynamic_partitions = get_dynamic_partitions
    try:
        yield
    finally:
        if shadowed:
            instance.get_dynamic_partitions = original
        else:
            del instance.get_dynamic_partitions


def requested_now(defs: dg.Definitions, instance: dg.DagsterInstance, cursor_path: Path) -> tuple[dict[dg.AssetKey, set[str]], bool]:
    """What the automation conditions request on ``instance`` now, from the cursor saved at ``cursor_path``,
    without executing anything or saving the new cursor: ``({asset key: partition keys}, cursor found)``.

    Without a saved cursor, the first evaluation only records state (as in ``falconer run``), so a second
    one, from the first's cursor (kept in memory), gives the answer.
    """
    cursor = load_cursor(cursor_path)
    with partitions_read_once(instance):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        if cursor is None:
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        return {key: {str(p) for p in result.get_requested_partitions(key)} for key in STAGES}, cursor is not None


def task_status(defs: dg.Definitions, instance: dg.DagsterInstance, data_dir: Path, cursor_path: Path) -> StatusReport:
    """Every task's stages (see the module docstring); executes nothing.

    Args:
        defs: the code location (:func:`~falconer_assets.definitions.build_definitions` over ``data_dir``).
        instance: the persistent Dagster instance ``falconer run`` and ``dagster dev`` use.
        data_dir: the data folder (``tasks/``, ``corpora/``).
        cursor_path: the automation cursor ``falconer run`` saves (read, never written).

    Returns:
        A :class:`StatusReport`. Writes to ``instance`` only what the task sensor would: ``task_spec``
        versions of edited task files and the ``tasks`` partitions of added or removed ones.
    """
    data_dir = Path(data_dir)
    folder = sync.load_valid_tasks(data_dir)
    task_sync = sync.sync_tasks(data_dir, instance, folder)
    sync.apply(instance, task_sync)
    edited = {e.partition for e in task_sync.events if e.asset_key == TASK_SPEC}  # a labels edit re-runs annotations, not plan
    requested, cursor_found = requested_now(defs, instance, cursor_path)
    replan = set(sync.plans_built_from_other_specs(folder, instance))
    changed_files = {str(r.partition_key) for r in sync.changed_file_changes(data_dir, instance).run_requests}
    registered = set(instance.get_dynamic_partitions(CORPUS_FILES.name))
    on_disk = set(sync.scan_corpus_files(data_dir))
    report = StatusReport(corpora={n: t.corpus for n, t in folder.tasks.items()}, errors=dict(folder.errors),
                          cursor_found=cursor_found)
    tasks = sorted(set(folder.tasks) & set(instance.get_dynamic_partitions(TASKS.name)))
    graph = defs.resolve_asset_graph()
    code_versions = {key: graph.get(key).code_version for key in STAGES}
    for name in tasks:
        corpus = folder.tasks[name].corpus
        files = sorted(f for f in registered | on_disk if split_file_key(f)[0] == corpus)
        rows: list[tuple[dg.AssetKey, str | None, str]] = []  # (key, file, partition key)
        for key in STAGES:
            if key == MINED:
                rows += [(key, f, str(task_file_key(name, f))) for f in files]
            else:
                rows.append((key, None, name))
        states: dict[dg.AssetKey, dict[str, str | None]] = {}
        for key in STAGES:
            defn = TASK_FILE_PARTITIONS if key == MINED else TASKS
            keys = [p for k, f, p in rows if k == key and (f is None or f in registered)]
            states[key] = _partition_states(instance, key, keys, defn)
        by_stage: dict[str, list[str]] = {}
        for key, file, partition in rows:
            stage = key.to_user_string()
            note = ""
            if file is not None and file not in registered:
                state, when, note = "missing", None, "new corpus file: the next `falconer run` mines it"
            else:
                state = states[key].get(partition) or "fresh"
                when, code_version = _last_materialized(instance, key, partition)
                spec_edited = key == PLAN and (name in edited or name in replan)
                file_changed = key == MINED and partition in changed_files
                if state == "fresh" and (partition in requested[key] or spec_edited or file_changed):
                    state = "stale"
                    if spec_edited:
                        note = "task file edited since it was planned"
                    elif file_changed:
                        note = "corpus file changed since it was mined"
                    elif code_version is not None and code_version != code_versions.get(key):
                        note = f"code version {code_version} -> {code_versions.get(key)}"
                    else:
                        note = "a parent's data changed"
                elif state == "missing" and partition in requested[key]:
                    note = "`falconer run` builds it"
                elif state == "failed":
                    note = f"fix the cause, then: falconer run --force {name}"
            waiting = [p for p in PARENTS.get(stage, ()) if any(s != "fresh" for s in by_stage.get(p, []))]
            if state == "fresh" and waiting:
                note = f"may re-run after {', '.join(waiting)}"
            elif state == "missing" and not note:
                note = f"waits for {', '.join(waiting)}" if waiting else "waits for its parents"
            by_stage.setdefault(stage, []).append(state)
            report.stages.append(StageStatus(name, stage, file, state, when, note))
    return report


def format_status(report: StatusReport, tz: timezone | None = None) -> str:
    """``report`` as plain text: per task a header line and a table (stage, state, last materialized in local
    time, or in ``tz``, and the note), then the task files left out and a legend."""
    out = []
    if not report.cursor_found:
        out.append("(no saved automation cursor: `falconer run` has not run on this instance yet, so only missing "
                   "and failed stages show; edits from before now are not seen as changes)")
    tasks = list(dict.fromkeys(s.task for s in report.stages))
    width = max([len(s.label) for s in report.stages] + [len("stage")])
    for name in tasks:
        out.append("")
        out.append(f"{name}  (corpus {report.corpora.get(name, '?')})")
        out.append(f"  {'stage':<{width}}  {'state':<11}  {'last materialized':<19}  note")
        for s in (s for s in report.stages if s.task == name):
            when = s.last_materialized.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if s.last_materialized else "-"
            out.append(f"  {s.label:<{width}}  {s.state:<11}  {when:<19}  {s.note}".rstrip())
    if not tasks:
        out.append("no tasks: add one with `falconer new <task> --corpus <corpus> \"<instruction>\"`")
    for path, error in sorted(report.errors.items()):
        out.append(f"\ntask file {path} left out: {error}")
    out.append("\nfresh: up to date; stale: `falconer run` (or dagster dev's automation) would re-run it; missing: "
               "never materialized; failed: its last run failed (not retried automatically); in progress: a run is "
               "materializing it")
    return "\n".join(out)
