"""The data folder as a Dagster resource: task specs, corpora and parsed plans, read once per run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from falconer_assets.inputs.corpus import Corpus, read_corpus_folder
from falconer_assets.inputs.tasks import Task, TaskError, load_task
from falconer_assets.plan.sandbox import PlanValidationError, ValidatedPlan, validate_plan
from falconer_assets.warehouse.store import read_plan


class Workspace(dg.ConfigurableResource):
    """A Falconer data folder: ``tasks/*.yaml``, ``corpora/<corpus>/*.jsonl`` and the stored plans.

    Every getter is memoised for the run (the caches are reset in ``setup_for_execution``), so
    a run that materializes several assets of a task reads its task file, its corpus and its
    plan once. Bad input raises ``dg.Failure`` naming the file and the problem.

    Attributes:
        data_dir: the folder (default ``data``).
    """

    data_dir: str = "data"

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
            dg.Failure: the file is gone or malformed (the message names the file and the problem).
        """
        if name not in self._tasks:
            path = self.path / "tasks" / f"{name}.yaml"
            if not path.exists():
                raise dg.Failure(f"task {name!r}: {path} does not exist (deleted? the task sensor removes its partition)")
            try:
                self._tasks[name] = load_task(path)
            except TaskError as exc:
                raise dg.Failure(f"task {name!r} cannot be loaded: {exc}") from exc
        return self._tasks[name]

    def corpus(self, name: str) -> Corpus:
        """Every file of corpus ``name`` read as one :class:`~falconer_assets.inputs.corpus.Corpus`.

        Raises:
            dg.Failure: the corpus folder has no file.
        """
        if name not in self._corpora:
            try:
                self._corpora[name] = read_corpus_folder(self.corpora_dir, name)
            except FileNotFoundError as exc:
                raise dg.Failure(str(exc)) from exc
        return self._corpora[name]

    def corpus_file(self, corpus: str, file_name: str) -> Path:
        """Path of one corpus file, ``<data_dir>/corpora/<corpus>/<file_name>`` (it may not exist)."""
        return self.corpora_dir / corpus / file_name

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
