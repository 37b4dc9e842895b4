"""Tasks as data: ``data/tasks/<name>.yaml`` files (instruction, corpus, output fields).

A task file looks like::

    name: debian_game_genres
    kind: query-based            # basic | query-based | multi-entity (paper section 4.2)
    instruction: Retrieve packages that are games and extract their genre.
    corpus: debian_packages      # -> every data/corpora/debian_packages/*.jsonl
    fields:
      - name: genre
        description: the genre of the game
    quality:                     # optional: the proxy -> LLM cascade with a guarantee
      target: recall             # recall | precision (of the label sub-tasks, vs the annotator)
      value: 0.9                 # the target...
      delta: 0.1                 # ...holds with probability >= 1 - delta
      llm_budget: 0.2            # share of documents the LLM may answer beyond what the target needs

An optional user-edited plan ``data/tasks/<name>.plan.py`` replaces the LLM planner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pydantic
import yaml

TASK_KINDS = ("basic", "query-based", "multi-entity")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class TaskError(ValueError):
    """A task file is malformed; the message names the file and the problem."""


class QualityTarget(pydantic.BaseModel):
    """A task's ``quality:`` block: what the proxy -> LLM cascade must guarantee.

    Attributes:
        target: ``"recall"`` or ``"precision"`` of each label sub-task's answers against the annotator
            (for span sub-tasks, the per-document agreement with the annotator; see
            :mod:`falconer_assets.cascade`).
        value: the target, in (0, 1).
        delta: the target holds with probability at least ``1 - delta``, in (0, 1).
        llm_budget: the share of held-out documents, in [0, 1], that the uncertain band may send to the
            LLM beyond what the target needs (it improves the other side: precision for a recall target).

    Raises:
        pydantic.ValidationError: a missing or out-of-range field, or an unknown key.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    target: Literal["recall", "precision"]
    value: float = pydantic.Field(gt=0, lt=1)
    delta: float = pydantic.Field(default=0.1, gt=0, lt=1)
    llm_budget: float = pydantic.Field(default=0.2, ge=0, le=1)


@dataclass(frozen=True)
class Field:
    """One output field of a task: ``name`` (identifier used by plans) and a human ``description``."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class Task:
    """A knowledge-mining task loaded from YAML.

    Attributes:
        name: identifier (lowercase, digits, ``_``), also the Dagster asset key prefix.
        kind: one of :data:`TASK_KINDS`.
        instruction: the user's plain-language instruction.
        corpus: corpus name; documents live in ``<data_dir>/corpora/<corpus>/*.jsonl``.
        fields: output fields the plan must fill.
        path: the YAML file it came from.
        quality: the optional cascade target (``None``: the proxy answers everything, as without one).
    """

    name: str
    kind: str
    instruction: str
    corpus: str
    fields: tuple[Field, ...]
    path: Path
    quality: QualityTarget | None = None

    @property
    def plan_override_path(self) -> Path:
        """``<name>.plan.py`` beside the YAML: a user-edited plan used instead of the LLM planner."""
        return self.path.with_name(f"{self.name}.plan.py")

    def fields_as_dicts(self) -> list[dict]:
        """``[{"name", "description"}, ...]`` for prompts."""
        return [{"name": f.name, "description": f.description} for f in self.fields]


def load_task(path: str | Path) -> Task:
    """Parse and validate one task YAML file.

    Raises:
        TaskError: unreadable YAML, a missing/empty key, an unknown ``kind``, a bad name,
            a name that differs from the file stem, malformed/duplicate fields, or a bad
            ``quality`` block (the message names the field).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TaskError(f"{path}: cannot read task YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    for key in ("name", "instruction", "corpus", "fields"):
        if not raw.get(key):
            raise TaskError(f"{path}: missing or empty key {key!r}")
    name = str(raw["name"])
    if not _NAME_RE.match(name):
        raise TaskError(f"{path}: name {name!r} must match {_NAME_RE.pattern}")
    if name != path.stem:
        raise TaskError(f"{path}: name {name!r} must equal the file stem {path.stem!r}")
    kind = str(raw.get("kind", "basic"))
    if kind not in TASK_KINDS:
        raise TaskError(f"{path}: kind {kind!r} is not one of {TASK_KINDS}")
    if not isinstance(raw["fields"], list):
        raise TaskError(f"{path}: 'fields' must be a list of {{name, description}}")
    fields = []
    for i, f in enumerate(raw["fields"]):
        if isinstance(f, str):
            f = {"name": f}
        if not isinstance(f, dict) or not f.get("name") or not re.match(r"^[a-z][a-z0-9_]*$", str(f["name"])):
            raise TaskError(f"{path}: field #{i} needs a lowercase identifier 'name', got {f!r}")
        fields.append(Field(str(f["name"]), str(f.get("description", ""))))
    if len({f.name for f in fields}) != len(fields):
        raise TaskError(f"{path}: duplicate field names")
    quality = None
    if raw.get("quality") is not None:
        if not isinstance(raw["quality"], dict):
            raise TaskError(f"{path}: 'quality' must be a mapping like {{target: recall, value: 0.9, delta: 0.1, "
                            f"llm_budget: 0.2}}, got {raw['quality']!r}")
        try:
            quality = QualityTarget(**raw["quality"])
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'quality'}: {e['msg']}" for e in exc.errors())
            raise TaskError(f"{path}: bad 'quality' block: {problems}") from exc
    return Task(
        name=name,
        kind=kind,
        instruction=" ".join(str(raw["instruction"]).split()),
        corpus=str(raw["corpus"]),
        fields=tuple(fields),
        path=path,
        quality=quality,
    )


def load_tasks(tasks_dir: str | Path) -> list[Task]:
    """Load every ``*.yaml`` in ``tasks_dir`` sorted by name; raises :class:`TaskError` on the first bad file."""
    return [load_task(p) for p in sorted(Path(tasks_dir).glob("*.yaml"))]
