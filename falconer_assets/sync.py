"""Keeping the dynamic partitions in step with ``data/``: what changed in the task and corpus folders.

Used by the sensors (:mod:`falconer_assets.sensors`), which return the changes as a
``SensorResult``, and by ``falconer run``, which applies them to the instance directly with
:func:`apply`. Nothing here materializes an asset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from falconer_assets.assets.keys import CORPUS_FILES_KEY, MINED, PLAN, PROXY_CHECKPOINT, TASK_LABELS, TASK_SPEC
from falconer_assets.inputs.corpus import corpus_file_paths, corpus_names
from falconer_assets.inputs.tasks import Task, TaskError, load_task
from falconer_assets.versions import file_sha256, task_labels_version, task_spec_version
from falconer_assets.partitions import CORPUS_FILES, TASKS, file_key, split_file_key, task_file_key

DATA_VERSION_TAG = "dagster/data_version"
"""Tag carrying the data version of a reported materialization (Dagster's ``DATA_VERSION_TAG``)."""

@dataclass
class Changes:
    """What a sync found: partitions to add/delete, source materializations to report, runs to request,
    and bad files (``{path: error}``) that were left out."""

    add: dict[str, list[str]] = field(default_factory=dict)  # partitions def name -> keys
    delete: dict[str, list[str]] = field(default_factory=dict)
    events: list[dg.AssetMaterialization] = field(default_factory=list)
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def partition_requests(self) -> list:
        """The add/delete requests for a ``SensorResult``."""
        out: list = [dg.AddDynamicPartitionsRequest(n, keys) for n, keys in self.add.items() if keys]
        out += [dg.DeleteDynamicPartitionsRequest(n, keys) for n, keys in self.delete.items() if keys]
        return out

    def summary(self) -> str:
        """One line for sensor logs and skip reasons."""
        parts = [f"+{len(k)} {n}" for n, k in self.add.items() if k]
        parts += [f"-{len(k)} {n}" for n, k in self.delete.items() if k]
        parts += [f"{len(self.events)} changed source file(s)"] if self.events else []
        parts += [f"{len(self.run_requests)} run request(s)"] if self.run_requests else []
        parts += [f"{len(self.errors)} bad file(s): " + "; ".join(f"{p}: {e}" for p, e in self.errors.items())] \
            if self.errors else []
        return ", ".join(parts) or "no change"


def _reported(key: dg.AssetKey, partition: str, version: str, **metadata) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(asset_key=key, partition=partition, metadata=metadata,
                                   tags={DATA_VERSION_TAG: version})


@dataclass(frozen=True)
class TaskFolder:
    """The task files of ``data/tasks`` read once: ``tasks`` (``{name: Task}``, every file that parses)
    and ``errors`` (``{path: error}``); a bad file never hides the others."""

    tasks: dict[str, Task]
    errors: dict[str, str]


def load_valid_tasks(data_dir: Path) -> TaskFolder:
    """Read every ``<data_dir>/tasks/*.yaml`` with :func:`~falconer_assets.inputs.tasks.load_task` under
    ``data_dir`` (so a task over a corpus that has no file yet is an error until it has one; see
    :class:`TaskFolder`)."""
    tasks, errors = {}, {}
    for path in sorted((Path(data_dir) / "tasks").glob("*.yaml")):
        try:
            tasks[path.stem] = load_task(path, data_dir)
        except TaskError as exc:
            errors[str(path)] = str(exc)
    return TaskFolder(tasks, errors)


def task_changes(folder: TaskFolder, known: set[str], reported: dict[str, str],
                 reported_labels: dict[str, str] | None = None) -> Changes:
    """Compare ``data/tasks`` with the ``tasks`` partitions (``known``) and the last reported versions.

    Args:
        folder: the task files (:func:`load_valid_tasks`).
        known: current ``tasks`` partition keys.
        reported: ``{task: task_spec version}`` reported before (:func:`reported_task_versions`).
        reported_labels: ``{task: task_labels version}`` reported before (``None``: none was).

    Returns:
        The changes: new tasks are added, tasks whose YAML is gone are deleted,
        new or edited tasks get a ``task_spec`` materialization (data version
        :func:`~falconer_assets.versions.task_spec_version`), and new tasks and tasks whose
        ``<task>.labels.jsonl`` appeared, changed or went away get a ``task_labels`` one (data version
        :func:`~falconer_assets.versions.task_labels_version`, ``"none"`` without the file: every task has
        one, so ``annotations`` never waits for a missing parent). A malformed task file is
        left out (an existing partition keeps its last good version) and named in ``errors``; the labels
        file is only hashed here, ``annotations`` checks its lines.
    """
    tasks = folder.tasks
    changes = Changes(errors=dict(folder.errors))
    bad_stems = {Path(p).stem for p in folder.errors}
    changes.add[TASKS.name] = sorted(set(tasks) - known)
    changes.delete[TASKS.name] = sorted(k for k in known - set(tasks) if k not in bad_stems)
    for name, task in sorted(tasks.items()):
        version = task_spec_version(task.path)
        if reported.get(name) != version or name not in known:
            changes.events.append(_reported(TASK_SPEC, name, version, path=dg.MetadataValue.path(str(task.path)),
                                            instruction=task.instruction, corpus=task.corpus))
        labels = task_labels_version(task.path)
        if (reported_labels or {}).get(name) != labels or name not in known:
            changes.events.append(_reported(TASK_LABELS, name, labels, path=dg.MetadataValue.path(
                str(task.labels_path)), present=task.labels_path.exists()))
    return changes


def scan_corpus_files(data_dir: Path) -> dict[str, Path]:
    """``{corpus file partition key: path}`` for every ``data/corpora/<corpus>/*.jsonl``."""
    corpora = Path(data_dir) / "corpora"
    return {file_key(c, p.name): p for c in corpus_names(corpora) for p in corpus_file_paths(corpora, c)}


def _mining_requests(files: list[str], tasks: dict[str, Task], mined_tasks: set[str], trigger: str,
                     only: set[tuple[str, str]] | None = None) -> list[dg.RunRequest]:
    out = []
    for key in files:
        corpus, _ = split_file_key(key)
        for name in sorted(tasks):
            if tasks[name].corpus != corpus or name not in mined_tasks or (only is not None and (name, key) not in only):
                continue
            out.append(dg.RunRequest(
                run_key=None, partition_key=task_file_key(name, key), asset_selection=[MINED],
                tags={"falconer/trigger": trigger, "falconer/task": name, "falconer/file": key}))
    return out


def new_file_changes(data_dir: Path, instance: dg.DagsterInstance, folder: TaskFolder | None = None) -> Changes:
    """New corpus files: register each as a ``corpus_files`` partition, report its content hash, and
    request mining of that file only, once per task over its corpus that already has a proxy
    (a task without one mines every file when its proxy is first trained). Files that are
    gone have their partition deleted (their mined rows stay in the warehouse). ``folder``: the task files
    if already read (read here otherwise)."""
    files = scan_corpus_files(data_dir)
    known = set(instance.get_dynamic_partitions(CORPUS_FILES.name))
    new = sorted(set(files) - known)
    changes = Changes()
    changes.add[CORPUS_FILES.name] = new
    changes.delete[CORPUS_FILES.name] = sorted(known - set(files))
    changes.events = [_reported(CORPUS_FILES_KEY, k, file_sha256(files[k]), path=dg.MetadataValue.path(str(files[k])))
                      for k in new]
    folder = folder or load_valid_tasks(data_dir)
    tasks, changes.errors = folder.tasks, dict(folder.errors)
    with_proxy = set(instance.get_materialized_partitions(PROXY_CHECKPOINT)) if new else set()
    changes.run_requests = _mining_requests(new, tasks, with_proxy, "new_corpus_file")
    return changes


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey,
                           partition: str) -> dg.AssetMaterialization | None:
    """The latest materialization of one partition of ``key`` (``None`` if it was never materialized)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    return records[0].asset_materialization if records else None


def _metadata_value(materialization: dg.AssetMaterialization | None, name: str):
    """The raw value of metadata entry ``name`` (``None`` when absent or never materialized)."""
    value = materialization.metadata.get(name) if materialization is not None else None
    return getattr(value, "value", value)


def mined_file_hash(instance: dg.DagsterInstance, task: str, key: str) -> str | None:
    """The ``file_sha256`` recorded by the latest materialization of ``mined`` for (task, file), if any."""
    return _metadata_value(latest_materialization(instance, MINED, str(task_file_key(task, key))), "file_sha256")


def changed_file_changes(data_dir: Path, instance: dg.DagsterInstance) -> Changes:
    """Corpus files changed in place since they were mined: for every registered file and every task
    over its corpus with a mined partition, compare the file's SHA-256 now with the one recorded
    when that partition was mined; request re-mining where they differ, and report the new hash."""
    files = scan_corpus_files(data_dir)
    known = set(instance.get_dynamic_partitions(CORPUS_FILES.name))
    folder = load_valid_tasks(data_dir)
    tasks = folder.tasks
    changes = Changes(errors=dict(folder.errors))
    mined = {_task_and_file(k) for k in instance.get_materialized_partitions(MINED)}
    stale: set[tuple[str, str]] = set()
    changed_files = []
    for key in sorted(set(files) & known):
        corpus, _ = split_file_key(key)
        sha = file_sha256(files[key])
        pairs = {(t, key) for t in tasks if tasks[t].corpus == corpus and (t, key) in mined
                 and mined_file_hash(instance, t, key) != sha}
        if pairs:
            stale |= pairs
            changed_files.append(key)
            changes.events.append(_reported(CORPUS_FILES_KEY, key, sha, path=dg.MetadataValue.path(str(files[key]))))
    changes.run_requests = _mining_requests(changed_files, tasks, set(tasks), "corpus_file_changed", only=stale)
    return changes


def _task_and_file(key: str) -> tuple[str, str]:
    """``(task, file)`` of a ``mined`` partition key string (values joined by ``|`` in dimension-name
    order: file, then task)."""
    file, task = str(key).split("|")
    return task, file


def apply(instance: dg.DagsterInstance, changes: Changes) -> None:
    """Apply ``changes`` to ``instance`` the way the sensor daemon applies a ``SensorResult``
    (partition adds/deletes, then the reported materializations); run requests are left to the caller."""
    for name, keys in changes.add.items():
        if keys:
            instance.add_dynamic_partitions(name, keys)
    for name, keys in changes.delete.items():
        for k in keys:
            instance.delete_dynamic_partition(name, k)
    for event in changes.events:
        instance.report_runless_asset_event(event)


def plans_built_from_other_specs(folder: TaskFolder, instance: dg.DagsterInstance) -> list[str]:
    """Tasks whose latest ``plan`` was built from another task file version than the one on disk now.

    The automation conditions see changes between two of their own evaluations; a plan that
    another process (e.g. ``dagster dev`` while ``falconer run`` was not running) built from an
    edit that was later reverted would look unchanged to them. ``falconer run`` re-plans these
    first. Compares the ``task_spec_version`` metadata of the latest ``plan`` materialization
    (missing in plans built before it was recorded: those count as current).
    """
    tasks = folder.tasks
    out = []
    for name in sorted(set(instance.get_dynamic_partitions(TASKS.name)) & set(tasks)):
        built = _metadata_value(latest_materialization(instance, PLAN, name), "task_spec_version")
        if built is not None and built != task_spec_version(tasks[name].path):
            out.append(name)
    return out


def reported_task_versions(instance: dg.DagsterInstance, names: set[str],
                           key: dg.AssetKey = TASK_SPEC) -> dict[str, str]:
    """``{task: data version}`` of the latest ``key`` (``task_spec`` or ``task_labels``) materialization of
    each partition in ``names``.

    The instance is the only state: the sensor and ``falconer run`` both read it, so a change
    reported by one is not reported again by the other.
    """
    out = {}
    for name in sorted(names):
        reported = latest_materialization(instance, key, name)
        version = (reported.tags or {}).get(DATA_VERSION_TAG) if reported is not None else None
        if version:
            out[name] = version
    return out


def sync_tasks(data_dir: Path, instance: dg.DagsterInstance, folder: TaskFolder | None = None) -> Changes:
    """:func:`task_changes` against the instance's partitions and reported versions (``folder``: the task
    files if already read)."""
    known = set(instance.get_dynamic_partitions(TASKS.name))
    return task_changes(folder or load_valid_tasks(data_dir), known, reported_task_versions(instance, known),
                        reported_task_versions(instance, known, TASK_LABELS))
