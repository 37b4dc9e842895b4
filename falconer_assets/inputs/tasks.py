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

An optional user-edited plan ``data/tasks/<name>.plan.py`` replaces the LLM planner, and optional human
labels ``data/tasks/<name>.labels.jsonl`` replace the LLM's annotations (:mod:`falconer_assets.inputs.labels`).

Task files are untrusted input and read strictly (:func:`load_task`): size-capped, parsed by a safe YAML
loader without anchors, aliases or duplicate keys, every name matched in full against its pattern, the
corpus resolved as one folder under ``<data_dir>/corpora``, and every string field a YAML string
(``corpus: yes`` is a bool, an error, not ``'True'``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pydantic
import yaml

from falconer_assets.inputs.corpus import CORPUS_NAME_RE, corpus_names, valid_corpus_name

TASK_KINDS = ("basic", "query-based", "multi-entity")
TASK_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
"""A task name (also the file stem and the Dagster partition key), matched with ``fullmatch``."""
FIELD_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""An output field name (a key of the plan's result dicts), matched with ``fullmatch``; the same pattern as
``plan.limits.FIELD_NAME_PATTERN``, which the plan worker checks at run time (the worker imports the
standard library only, so it keeps its own copy; test_input_bank checks that they agree)."""
MAX_TASK_BYTES = 64 * 1024
"""Default largest task file, in bytes (64 KiB); a larger one is refused without being parsed."""
MAX_YAML_DEPTH = 16
"""Deepest nesting of YAML collections a task file may have (a task needs 3)."""
TASK_KEYS = ("name", "kind", "instruction", "corpus", "fields", "quality")
FIELD_KEYS = ("name", "description")


class TaskError(ValueError):
    """A task file is malformed or refused; the message names the file and the problem."""


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

    @property
    def labels_path(self) -> Path:
        """``<name>.labels.jsonl`` beside the YAML: human labels that override the LLM's annotations
        (:mod:`falconer_assets.inputs.labels`)."""
        return self.path.with_name(f"{self.name}.labels.jsonl")

    def fields_as_dicts(self) -> list[dict]:
        """``[{"name", "description"}, ...]`` for prompts."""
        return [{"name": f.name, "description": f.description} for f in self.fields]


class _TaskLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter: no anchors or aliases (no alias bombs), no duplicate mapping keys,
    no unhashable keys, no nesting deeper than :data:`MAX_YAML_DEPTH` (each a ``MarkedYAMLError``)."""

    _depth = 0

    def compose_node(self, parent, index):  # noqa: D102
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (& and *) are not allowed",
                                              event.start_mark)
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)) and self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                              event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: D102
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, f"unhashable key {_short(key)}",
                                                        key_node.start_mark) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_short(key)}",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _short(value: object, limit: int = 60) -> str:
    """A bounded ``repr`` (never raises)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int over the str-conversion digit limit
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _parse_yaml(path: Path, max_bytes: int) -> object:
    """The YAML document of ``path`` (read as UTF-8, at most ``max_bytes``) via :class:`_TaskLoader`."""
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise TaskError(f"{path}: cannot read task file: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise TaskError(f"{path}: task file is larger than the {max_bytes}-byte limit")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TaskError(f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    try:
        return yaml.load(text, Loader=_TaskLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise TaskError(f"{path}: {where}{exc.problem or exc.context}") from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise TaskError(f"{path}: line {line}: character #x{char:04x} is not allowed in YAML") from exc
    except yaml.YAMLError as exc:
        raise TaskError(f"{path}: cannot parse task YAML: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - e.g. ValueError on a 5,000-digit int or a bad date
        raise TaskError(f"{path}: cannot parse task YAML: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _string(path: Path, where: str, value: object, *, required: bool = True) -> str:
    """``value`` if it is a (non-empty, when ``required``) string, else a :class:`TaskError` naming ``where``."""
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, (bool, int, float)) or value is None else ""
        raise TaskError(f"{path}: {where} must be a string, got {type(value).__name__} {_short(value)}{hint}")
    if required and not value.strip():
        raise TaskError(f"{path}: {where} is empty")
    return value


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies directly in ``folder`` (paths made absolute and normalised, not resolved)."""
    return Path(os.path.normpath(os.path.abspath(path))).parent == Path(os.path.normpath(os.path.abspath(folder)))


def load_task(path: str | Path, data_dir: str | Path | None = None, *, max_bytes: int = MAX_TASK_BYTES) -> Task:
    """Parse and validate one task YAML file, strictly.

    The file is read only up to ``max_bytes`` and parsed by a safe YAML loader that refuses anchors and
    aliases, duplicate keys and deep nesting; ``name``, ``kind``, ``instruction``, ``corpus`` and each
    field's ``name`` and ``description`` must be YAML strings (``corpus: yes`` is a bool, an error), the
    names must fullmatch :data:`TASK_NAME_RE`, :data:`~falconer_assets.inputs.corpus.CORPUS_NAME_RE`
    (no ``..``) and :data:`FIELD_NAME_RE`, and unknown keys are errors.

    Args:
        path: the task file, ``<data_dir>/tasks/<name>.yaml``; a path with a ``..`` component is refused.
        data_dir: the data folder; when given, ``path`` must lie directly in ``<data_dir>/tasks`` and the
            corpus must be one of ``corpus_names(<data_dir>/corpora)``.
        max_bytes: the largest accepted file, in bytes (default :data:`MAX_TASK_BYTES`, 64 KiB).

    Raises:
        TaskError: the message names the file and the problem (line and column for YAML errors, the
            key otherwise): a path outside ``tasks/``, a file too large, unreadable or not UTF-8, bad or
            hostile YAML, a missing/empty/non-string/unknown key, an unknown ``kind``, a bad name, a name
            that differs from the file stem, a bad or unknown corpus (naming the known ones), malformed or
            duplicate fields, or a bad ``quality`` block (naming the field).
    """
    path = Path(path)
    if ".." in path.parts:
        raise TaskError(f"{path}: a task path must not contain '..'")
    if data_dir is not None and not _inside(path, Path(data_dir) / "tasks"):
        raise TaskError(f"{path}: a task file must lie in {Path(data_dir) / 'tasks'}")
    raw = _parse_yaml(path, max_bytes)
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in TASK_KEYS]
    if unknown:
        raise TaskError(f"{path}: unknown key {_short(unknown[0])} (known: {', '.join(TASK_KEYS)})")
    for key in ("name", "instruction", "corpus", "fields"):
        if raw.get(key) is None or raw[key] == "" or raw[key] == []:
            raise TaskError(f"{path}: missing or empty key {key!r}")
    name = _string(path, "'name'", raw["name"])
    if not TASK_NAME_RE.fullmatch(name):
        raise TaskError(f"{path}: name {_short(name)} must match {TASK_NAME_RE.pattern}")
    if name != path.stem:
        raise TaskError(f"{path}: name {name!r} must equal the file stem {path.stem!r}")
    kind = _string(path, "'kind'", raw.get("kind", "basic"))
    if kind not in TASK_KINDS:
        raise TaskError(f"{path}: kind {_short(kind)} is not one of {TASK_KINDS}")
    instruction = _string(path, "'instruction'", raw["instruction"])
    corpus = _string(path, "'corpus'", raw["corpus"])
    if not valid_corpus_name(corpus):
        raise TaskError(f"{path}: corpus {_short(corpus)} must be a folder name under corpora/ "
                        f"matching {CORPUS_NAME_RE.pattern} without '..'")
    if data_dir is not None:
        known = corpus_names(Path(data_dir) / "corpora")
        if corpus not in known:
            raise TaskError(f"{path}: unknown corpus {corpus!r}: no {Path(data_dir) / 'corpora' / corpus}/*.jsonl "
                            f"(known: {', '.join(known) or 'none'})")
    if not isinstance(raw["fields"], list):
        raise TaskError(f"{path}: 'fields' must be a list of {{name, description}}")
    fields = []
    for i, f in enumerate(raw["fields"]):
        if isinstance(f, str):
            f = {"name": f}
        if not isinstance(f, dict):
            raise TaskError(f"{path}: field #{i} must be a name or a mapping {{name, description}}, got {_short(f)}")
        unknown = [k for k in f if k not in FIELD_KEYS]
        if unknown:
            raise TaskError(f"{path}: field #{i}: unknown key {_short(unknown[0])} (known: {', '.join(FIELD_KEYS)})")
        field_name = _string(path, f"field #{i} 'name'", f.get("name"))
        if not FIELD_NAME_RE.fullmatch(field_name):
            raise TaskError(f"{path}: field #{i} 'name' {_short(field_name)} must match {FIELD_NAME_RE.pattern}")
        description = f.get("description")  # optional: missing or left empty is ""
        description = "" if description is None else _string(path, f"field #{i} 'description'", description,
                                                               required=False)
        fields.append(Field(field_name, description))
    if len({f.name for f in fields}) != len(fields):
        raise TaskError(f"{path}: duplicate field names")
    quality = None
    if raw.get("quality") is not None:
        if not isinstance(raw["quality"], dict):
            raise TaskError(f"{path}: 'quality' must be a mapping like {{target: recall, value: 0.9, delta: 0.1, "
                            f"llm_budget: 0.2}}, got {_short(raw['quality'])}")
        flags = [k for k, v in raw["quality"].items() if isinstance(v, bool)]
        if flags:  # pydantic would read yes/no as 1.0/0.0
            raise TaskError(f"{path}: bad 'quality' block: {_short(flags[0])} must be a number or a name, "
                            f"got bool {raw['quality'][flags[0]]}")
        try:
            quality = QualityTarget.model_validate(raw["quality"])
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'quality'}: {e['msg']}" for e in exc.errors())
            raise TaskError(f"{path}: bad 'quality' block: {problems}") from exc
    return Task(
        name=name,
        kind=kind,
        instruction=" ".join(instruction.split()),
        corpus=corpus,
        fields=tuple(fields),
        path=path,
        quality=quality,
    )


def load_tasks(tasks_dir: str | Path, data_dir: str | Path | None = None) -> list[Task]:
    """Load every ``*.yaml`` in ``tasks_dir`` sorted by name (``data_dir``: see :func:`load_task`);
    raises :class:`TaskError` on the first bad file."""
    return [load_task(p, data_dir) for p in sorted(Path(tasks_dir).glob("*.yaml"))]
