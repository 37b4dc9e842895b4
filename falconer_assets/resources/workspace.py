"""The data folder as a Dagster resource: task specs, corpora and parsed plans, read once per run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from falconer_assets.inputs.corpus import MAX_LINE_BYTES, Corpus, read_corpus_folder, valid_corpus_name
from falconer_assets.inputs.labels import HumanLabels, SubTask, read_labels
from falconer_assets.inputs.tasks import TASK_NAME_RE, Task, TaskError, load_task
from falconer_assets.plan.sandbox import PlanValidationError, ValidatedPlan, validate_plan
from falconer_assets.warehouse.store import read_plan


class Workspace(dg.ConfigurableResource):
    """A Falconer data folder: ``tasks/*.yaml``, ``corpora/<corpus>/*.jsonl`` and the stored plans.

    Every getter is memoised for the run (the caches are reset in ``setup_for_execution``), so
    a run that materializes several assets of a task reads its task file, its corpus and its
    plan once. Bad input raises ``dg.Failure`` naming the file and the problem.

    Attributes:
        data_dir: the folder (default ``data``).
        max_line_bytes: the longest corpus line read, in bytes without its newline (default 1 MiB,
            :data:`~falconer_assets.inputs.corpus.MAX_LINE_BYTES`); a longer line is a reject.
    """

    data_dir: str = "data"
    max_line_bytes: int = Field(default=MAX_LINE_BYTES, ge=1, description=(
        "Longest corpus line read, in bytes without its newline; a longer line is a reject (read in bounded chunks)."))

    _tasks: dict[str, Task] = PrivateAttr(default_factory=dict)
    _corpora: dict[str, Corpus] = PrivateAttr(default_factory=dict)
    _plans: dict[tuple[str, str], ValidatedPlan] = PrivateAttr(default_factory=dict)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Start the run with empty caches (files may have changed since the last run)."""
        self._tasks, self._corpora, self._plans = {}, {}, {}

    @property
    def path(self) -> Path:
        """``data_dir`` as a ``Path``."""
        return Path(self.data_dir)

    @property
    def corpora_dir(self) -> Path:
        """``<data_dir>/corpora``."""
        return self.path / "corpora"

    def task(self, name: str) -> Task:
        """The task of a ``tasks`` partition, read from ``<data_dir>/tasks/<name>.yaml``.

        Raises:
            dg.Failure: ``name`` is not a task name, or the file is gone or malformed or its corpus unknown
                (the message names the file and the problem).
        """
        if name not in self._tasks:
            if not TASK_NAME_RE.fullmatch(name):
                raise dg.Failure(f"task {name!r}: not a task name (must match {TASK_NAME_RE.pattern})")
            path = self.path / "tasks" / f"{name}.yaml"
            if not path.exists():
                raise dg.Failure(f"task {name!r}: {path} does not exist (deleted? the task sensor removes its partition)")
            try:
                self._tasks[name] = load_task(path, self.path)
            except TaskError as exc:
                raise dg.Failure(f"task {name!r} cannot be loaded: {exc}") from exc
        return self._tasks[name]

    def corpus(self, name: str) -> Corpus:
        """Every file of corpus ``name`` read as one :class:`~falconer_assets.inputs.corpus.Corpus`.

        Raises:
            dg.Failure: ``name`` is not a corpus name, or the corpus folder has no file.
        """
        if name not in self._corpora:
            try:
                self._corpora[name] = read_corpus_folder(self.corpora_dir, name, max_line_bytes=self.max_line_bytes)
            except (FileNotFoundError, ValueError) as exc:
                raise dg.Failure(str(exc)) from exc
        return self._corpora[name]

    def corpus_file(self, corpus: str, file_name: str) -> Path:
        """Path of one corpus file, ``<data_dir>/corpora/<corpus>/<file_name>`` (it may not exist).

        Raises:
            dg.Failure: ``corpus`` is not a corpus name or ``file_name`` is not one path component.
        """
        if not valid_corpus_name(corpus) or file_name in ("", ".", "..") or Path(file_name).name != file_name:
            raise dg.Failure(f"corpus file {corpus!r}/{file_name!r}: not a corpus name and a file name in its folder")
        return self.corpora_dir / corpus / file_name

    def human_labels(self, task: Task, corpus: Corpus, sub_tasks: list[SubTask]) -> HumanLabels | None:
        """The task's human labels (``<data_dir>/tasks/<task>.labels.jsonl``), checked against the corpus
        text and the plan's sub-tasks (:func:`~falconer_assets.inputs.labels.read_labels`); ``None`` when
        the task has no labels file. Read on every call (the ``annotations`` asset calls it once).

        Raises:
            dg.Failure: the file cannot be read, or any line is bad (the message names the file and lists
                the bad lines with their problems; no label of the file is used).
        """
        path = task.labels_path
        if not path.exists():
            return None
        try:
            labels = read_labels(path, corpus.by_id, sub_tasks, corpus=corpus.name, max_line_bytes=self.max_line_bytes)
        except OSError as exc:
            raise dg.Failure(f"human labels {path}: cannot read: {exc.strerror or exc}") from exc
        if labels.problems:
            raise dg.Failure(labels.error_message(), metadata={"labels_file": str(path), **labels.counts()})
        return labels

    @staticmethod
    def validate(source: str, origin: str) -> ValidatedPlan:
        """Validate plan source; raises ``dg.Failure`` naming ``origin`` and the validation error."""
        try:
            return validate_plan(source)
        except PlanValidationError as exc:
            raise dg.Failure(f"plan from {origin} is invalid: {exc}") from exc

    def plan(self, conn, task: str) -> ValidatedPlan:
        """The task's plan as the ``plan`` asset stored it in the warehouse, validated again (it is
        untrusted code at rest too).

        Raises:
            dg.Failure: no plan is stored for ``task`` (materialize its ``plan`` first), or it is invalid.
        """
        record = read_plan(conn, task)
        if record is None:
            raise dg.Failure(f"no plan stored for task {task!r}: materialize plan[{task}] first")
        key = (task, record.ast_hash)
        if key not in self._plans:
            self._plans[key] = self.validate(record.source, f"plan[{task}]")
        return self._plans[key]
