"""Writing a task file from the command line (``falconer new``): a validated ``data/tasks/<task>.yaml``.

The fields are given (``--field name:description``) or named by the LLM planner: it is asked for a plan
for the instruction with the field names left to it (:func:`~falconer_assets.plan.planner.plan_with_retries`
with ``infer_fields``), the fields are the keys its result dicts write
(:attr:`~falconer_assets.plan.sandbox.ValidatedPlan.field_names`), and the plan is written beside the task as
``<task>.plan.py``, where the ``plan`` asset uses it instead of asking the planner again (edit it to change
what is mined; delete it to let the planner re-plan from the instruction).

The task file is written to a temporary file in ``tasks/``, loaded back with the strict loader
(:func:`~falconer_assets.inputs.tasks.load_task`) and only then renamed into place, so a sensor watching the
folder never sees a half-written or invalid task. No Dagster here; the LLM is any ``messages -> reply text``
callable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from falconer_assets.inputs.corpus import corpus_names, valid_corpus_name
from falconer_assets.inputs.tasks import FIELD_NAME_RE, TASK_KINDS, TASK_NAME_RE, Field, Task, TaskError, load_task
from falconer_assets.plan.planner import plan_with_retries
from falconer_assets.plan.sandbox import PlanValidationError, ValidatedPlan

Chat = Callable[..., str]
"""An LLM as the planner sees it: OpenAI-style messages -> the reply text (keyword parameters it accepts, such
as ``temperature``, are the planner's to pass)."""


@dataclass(frozen=True)
class NewTask:
    """What :func:`write_task` wrote.

    Attributes:
        task: the task as the strict loader read it back.
        path: ``<data_dir>/tasks/<name>.yaml``.
        plan_path: ``<name>.plan.py`` when the planner named the fields (the plan written there), else ``None``.
        plan: the planner's plan (``None`` when the fields were given).
        attempts: planner calls made (0 when the fields were given).
    """

    task: Task
    path: Path
    plan_path: Path | None = None
    plan: ValidatedPlan | None = None
    attempts: int = 0


def parse_field(spec: str) -> Field:
    """``"name:description"`` (or a bare ``"name"``) -> :class:`~falconer_assets.inputs.tasks.Field`.

    Raises:
        TaskError: the name does not match :data:`~falconer_assets.inputs.tasks.FIELD_NAME_RE`.
    """
    name, _, description = spec.partition(":")
    name = name.strip()
    if not FIELD_NAME_RE.fullmatch(name):
        raise TaskError(f"field {spec!r}: the name {name!r} must match {FIELD_NAME_RE.pattern} "
                        f"(write it as name:description)")
    return Field(name, " ".join(description.split()))


def kind_of_plan(plan: ValidatedPlan) -> str:
    """The task kind a plan's shape suggests: ``"basic"`` without ``get_label`` calls, ``"query-based"`` with
    one, ``"multi-entity"`` with several (the kind is descriptive; nothing downstream depends on it)."""
    labels = len(plan.label_instructions)
    return "basic" if labels == 0 else "query-based" if labels == 1 else "multi-entity"


class _IndentedDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, with list items indented under their key (the bundled tasks' style)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):  # noqa: D102
        return super().increase_indent(flow, False)


def task_yaml(name: str, kind: str, instruction: str, corpus: str, fields: Sequence[Field], comment: str = "") -> str:
    """The text of a task file (keys in the bundled tasks' order; every string quoted where YAML needs it,
    so ``yes`` or ``123`` stay strings; a field without a description is written without one), with
    ``comment`` as ``#`` lines on top."""
    body = yaml.dump({"name": name, "kind": kind, "instruction": " ".join(instruction.split()), "corpus": corpus,
                      "fields": [{"name": f.name, "description": f.description} if f.description else {"name": f.name}
                                 for f in fields]},
                     Dumper=_IndentedDumper, sort_keys=False, allow_unicode=True, width=110)
    head = "".join(f"# {line}\n".replace("# \n", "#\n") for line in comment.splitlines())
    return head + body


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_task(data_dir: str | Path, name: str, corpus: str, instruction: str, fields: Sequence[Field] = (),
               kind: str | None = None, *, force: bool = False, chat: Chat | None = None,
               max_attempts: int = 3) -> NewTask:
    """Write ``<data_dir>/tasks/<name>.yaml`` (and, when the planner names the fields, ``<name>.plan.py``).

    Args:
        data_dir: the data folder (``tasks/`` is created if missing).
        name: the task name (matches :data:`~falconer_assets.inputs.tasks.TASK_NAME_RE`).
        corpus: a corpus under ``<data_dir>/corpora`` with at least one ``*.jsonl`` file.
        instruction: the mining instruction (whitespace runs are collapsed).
        fields: the output fields; empty: the planner names them (``chat`` is then required).
        kind: one of :data:`~falconer_assets.inputs.tasks.TASK_KINDS`; ``None``: from the plan's shape
            (:func:`kind_of_plan`) when the planner ran, else ``"basic"``.
        force: replace an existing task file (and plan file) of that name.
        chat: the planner LLM, ``messages -> reply text`` (called up to ``max_attempts`` times).
        max_attempts: planner calls allowed, >= 1.

    Returns:
        The :class:`NewTask` written; the plan file is written before the task file, so a sensor that
        sees the new task finds its plan.

    Raises:
        TaskError: a bad task name, kind, field or instruction, an unknown corpus (the message names the
            known ones), or the planner wrote no valid plan naming its fields after ``max_attempts`` calls
            (each attempt's error in the message; give the fields with ``--field`` then).
        FileExistsError: the task file, or a plan file beside it, exists and ``force`` is false.
        ValueError: ``fields`` is empty and no ``chat`` was given.
    """
    data_dir = Path(data_dir)
    if not isinstance(name, str) or not TASK_NAME_RE.fullmatch(name):
        raise TaskError(f"task name {name!r} must match {TASK_NAME_RE.pattern} (lowercase letters, digits, _)")
    if kind is not None and kind not in TASK_KINDS:
        raise TaskError(f"kind {kind!r} is not one of {', '.join(TASK_KINDS)}")
    if not instruction or not instruction.strip():
        raise TaskError("the instruction is empty")
    known = corpus_names(data_dir / "corpora")
    if not valid_corpus_name(corpus) or corpus not in known:
        raise TaskError(f"unknown corpus {corpus!r}: no {data_dir / 'corpora' / str(corpus)}/*.jsonl "
                        f"(known: {', '.join(known) or 'none'})")
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise TaskError(f"duplicate field names in {names}")
    for f in fields:
        if not FIELD_NAME_RE.fullmatch(f.name):
            raise TaskError(f"field name {f.name!r} must match {FIELD_NAME_RE.pattern}")
    tasks_dir = data_dir / "tasks"
    path = tasks_dir / f"{name}.yaml"
    plan_path = path.with_name(f"{name}.plan.py")
    for existing in (path, plan_path) if not fields else (path,):
        if existing.exists() and not force:
            raise FileExistsError(f"{existing} already exists: pick another name, or pass --force to replace it")
    plan, attempts = None, 0
    if not fields:
        if chat is None:
            raise ValueError("no fields given and no planner LLM to name them")
        try:
            plan, tries = plan_with_retries(chat, instruction, [], max_attempts=max_attempts, infer_fields=True)
        except PlanValidationError as exc:
            raise TaskError(f"the planner wrote no plan naming its fields for task {name!r}; give the fields "
                            f"with --field name:description. {exc}") from exc
        attempts = len(tries)
        fields = [Field(n, "") for n in plan.field_names]
        kind = kind or kind_of_plan(plan)
    kind = kind or "basic"
    comment = (f"Written by `falconer new`. Fields named by the LLM planner; its plan is {plan_path.name},\n"
               f"used instead of the planner while it exists (edit it, or delete it to re-plan)."
               if plan is not None else "Written by `falconer new`.")
    text = task_yaml(name, kind, instruction, corpus, fields, comment)
    tasks_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tasks_dir, prefix=".new-") as tmp:
        candidate = Path(tmp) / path.name  # same stem: the loader checks the name against it
        candidate.write_text(text, encoding="utf-8")
        load_task(candidate)  # strict: what the sensors and the assets will read
    if plan is not None:
        _write_atomically(plan_path, plan.source.rstrip("\n") + "\n")
    _write_atomically(path, text)
    return NewTask(load_task(path, data_dir), path, plan_path if plan is not None else None, plan, attempts)
