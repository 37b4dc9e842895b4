"""Human labels: ``data/tasks/<task>.labels.jsonl``, read strictly (paper 3.5: curated human annotations
stand in for the LLM's).

One JSON object per line, one line per document and sub-task::

    {"doc_id": "debian:wesnoth", "question": "Is this package a game?", "label": true}
    {"doc_id": "debian:wesnoth", "question": "What is the genre of the game?", "spans": ["strategy"]}
    {"doc_id": "debian:freeciv-server", "question": "What is the genre of the game?",
     "spans": [{"start": 24, "end": 32, "text": "strategy"}]}

* ``doc_id``: a document of the task's corpus.
* ``question``: the sub-task's instruction exactly as the plan asks it (``get_label(texts, "...")`` /
  ``get_span(texts, "...")``).
* ``label`` (``true``/``false``) for a ``get_label`` question, or ``spans`` for a ``get_span`` question:
  a list (``[]``: nothing to extract) of strings, each occurring exactly once in the text, or of
  ``{"start", "end"}`` character offsets (0-based, end exclusive, Python code points), optionally with
  ``"text"``, which must equal ``text[start:end]``.

The reader is strict: every non-blank line becomes a :class:`HumanLabel` or a :class:`LabelProblem` naming
the file, the line and what is wrong (bad JSON, an unknown key, an unknown doc id, a question the plan does
not ask or asks as the other kind, offsets outside the text or not matching it, a string not found or found
more than once, a duplicate ``(doc_id, question)``); nothing is silently dropped, and
:meth:`HumanLabels.counts` says how many of each there were. Lines are read as the corpus reader reads
them (:func:`~falconer_assets.inputs.corpus.read_lines`, :func:`~falconer_assets.inputs.corpus.parse_json_line`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from falconer_assets.inputs.corpus import MAX_LINE_BYTES, Document, parse_json_line, read_lines
from falconer_assets.spans import Span

LABELS_SUFFIX = ".labels.jsonl"
"""A task's labels file is ``<task>.labels.jsonl`` beside its ``<task>.yaml``."""
LINE_KEYS = ("doc_id", "question", "label", "spans")
SPAN_KEYS = ("start", "end", "text")
MAX_LISTED = 20
"""Problems listed in a :class:`LabelsError` message (the rest are counted)."""

SubTask = tuple[str, str]
"""``(kind, instruction)``: ``kind`` is ``"label"`` or ``"span"``."""


@dataclass(frozen=True)
class HumanLabel:
    """One human answer to one sub-task on one document.

    Attributes:
        doc_id: the document's corpus id.
        kind: ``"label"`` or ``"span"``.
        question: the sub-task's instruction, as the plan asks it.
        label: the yes/no answer (``None`` for a span sub-task).
        spans: the answer spans (character offsets into the document, score 1.0; ``()`` for a label).
        line_no: the 1-based line of the labels file it came from.
    """

    doc_id: str
    kind: str
    question: str
    label: bool | None = None
    spans: tuple[Span, ...] = ()
    line_no: int = 0

    @property
    def sub_task(self) -> SubTask:
        """``(kind, question)``."""
        return self.kind, self.question


@dataclass(frozen=True)
class LabelProblem:
    """A bad line of a labels file: ``source`` (file name), 1-based ``line_no`` and ``problem``."""

    source: str
    line_no: int
    problem: str

    def __str__(self) -> str:
        return f"{self.source}, line {self.line_no}: {self.problem}"


class LabelsError(ValueError):
    """A labels file has bad lines; the message names the file and lists them (file, line, problem)."""


@dataclass(frozen=True)
class HumanLabels:
    """A labels file read whole.

    Attributes:
        path: the file.
        labels: the good lines, in file order.
        problems: one per bad line, in file order.
        lines: non-blank lines read (``len(labels) + len(problems)``).
    """

    path: Path
    labels: tuple[HumanLabel, ...]
    problems: tuple[LabelProblem, ...]
    lines: int

    def counts(self) -> dict[str, int]:
        """``{"lines", "labels", "label_answers", "span_answers", "spans", "docs", "problems"}``: lines read,
        good lines, of them label and span answers, spans in those, distinct documents, bad lines."""
        return {
            "lines": self.lines, "labels": len(self.labels),
            "label_answers": sum(h.kind == "label" for h in self.labels),
            "span_answers": sum(h.kind == "span" for h in self.labels),
            "spans": sum(len(h.spans) for h in self.labels),
            "docs": len({h.doc_id for h in self.labels}), "problems": len(self.problems),
        }

    def by_sub_task(self) -> dict[SubTask, dict[str, HumanLabel]]:
        """``{(kind, question): {doc_id: HumanLabel}}`` (each pair once: duplicates are problems)."""
        out: dict[SubTask, dict[str, HumanLabel]] = {}
        for h in self.labels:
            out.setdefault(h.sub_task, {})[h.doc_id] = h
        return out

    def error_message(self, max_listed: int = MAX_LISTED) -> str:
        """The problems as one message: the file, how many bad lines, the first ``max_listed`` of them."""
        listed = "\n".join(f"  {p}" for p in self.problems[:max_listed])
        more = len(self.problems) - max_listed
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return (f"human labels {self.path}: {len(self.problems)} bad line(s) of {self.lines}; fix or remove "
                f"them (no label of the file is used until then):\n{listed}{tail}")

    def raise_for_problems(self) -> HumanLabels:
        """``self`` when there is no problem.

        Raises:
            LabelsError: with :meth:`error_message`, when any line is bad.
        """
        if self.problems:
            raise LabelsError(self.error_message())
        return self


class _Bad(ValueError):
    """One line's problem (its message)."""


def _short(value: object, limit: int = 60) -> str:
    """A bounded ``repr`` (never raises)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int over the str-conversion digit limit
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def _question_kind(question: str, given: str, sub_tasks: Sequence[SubTask]) -> None:
    """Raise :class:`_Bad` unless the plan asks ``question`` as a ``given`` sub-task."""
    kinds = {k for k, q in sub_tasks if q == question}
    if given in kinds:
        return
    if kinds:
        other = "label" if given == "span" else "span"
        want, have = ("'label'", "'spans'") if other == "label" else ("'spans'", "'label'")
        raise _Bad(f"question {_short(question)} is a {other} sub-task of the plan: give {want}, not {have}")
    near = [q for _, q in sub_tasks if _normal(q) == _normal(question)]
    if near:
        raise _Bad(f"question {_short(question)} is not asked by the plan (did you mean {near[0]!r}?)")
    asked = list(dict.fromkeys(f"{q!r} ({k})" for k, q in sub_tasks))
    listed = ", ".join(asked[:5]) + (f", ... ({len(asked)} in all)" if len(asked) > 5 else "")
    raise _Bad(f"question {_short(question)} is not asked by the plan; it asks {listed or 'nothing'}")


def _offsets(text: str, needle: str) -> list[int]:
    """Every start offset of ``needle`` in ``text`` (overlapping occurrences too)."""
    out, at = [], text.find(needle)
    while at >= 0:
        out.append(at)
        at = text.find(needle, at + 1)
    return out


def _span(i: int, item: object, doc_id: str, text: str) -> Span:
    """Span #``i`` of a line: a string found once in ``text``, or a ``{start, end[, text]}`` object."""
    if isinstance(item, str):
        if not item.strip():
            raise _Bad(f"span #{i} is empty")
        found = _offsets(text, item)
        if not found:
            raise _Bad(f"span #{i} {_short(item)} is not in the text of {doc_id!r}")
        if len(found) > 1:
            shown = ", ".join(map(str, found[:5])) + (", ..." if len(found) > 5 else "")
            raise _Bad(f"span #{i} {_short(item)} occurs {len(found)} times in the text of {doc_id!r} "
                       f"(at {shown}): give {{\"start\", \"end\"}} offsets instead")
        return Span(found[0], found[0] + len(item), item)
    if not isinstance(item, dict):
        raise _Bad(f"span #{i} must be a string or a {{\"start\", \"end\"}} object, got {type(item).__name__}")
    unknown = [k for k in item if k not in SPAN_KEYS]
    if unknown:
        raise _Bad(f"span #{i}: unknown key {_short(unknown[0])} (known: {', '.join(SPAN_KEYS)})")
    start, end = item.get("start"), item.get("end")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in (start, end)):
        raise _Bad(f"span #{i}: 'start' and 'end' must be whole numbers, got {_short(start)} and {_short(end)}")
    if start >= end:
        raise _Bad(f"span #{i}: offsets [{start}, {end}) are empty or reversed")
    if start < 0 or end > len(text):
        raise _Bad(f"span #{i}: offsets [{start}, {end}) are outside the text of {doc_id!r} "
                   f"({len(text)} characters)")
    if "text" in item:
        if not isinstance(item["text"], str):
            raise _Bad(f"span #{i}: 'text' must be a string, got {type(item['text']).__name__}")
        if item["text"] != text[start:end]:
            raise _Bad(f"span #{i}: 'text' {_short(item['text'])} does not match the text of {doc_id!r} at "
                       f"[{start}, {end}), which is {_short(text[start:end])}")
    return Span(start, end, text[start:end])


def check_record(obj: object, line_no: int, docs: Mapping[str, Document], sub_tasks: Sequence[SubTask] | None,
                 corpus: str = "") -> HumanLabel:
    """One parsed line as a :class:`HumanLabel`, checked against the documents and the plan.

    Args:
        obj: the line's JSON value.
        line_no: its 1-based line number (kept on the label).
        docs: the corpus documents by id.
        sub_tasks: the plan's ``(kind, instruction)`` calls; ``None`` skips the question check (the kind is
            then the one the line gives).
        corpus: the corpus name, for the unknown-doc message.

    Raises:
        ValueError: the problem, without file or line (see the module docstring for the checks).
    """
    if not isinstance(obj, dict):
        raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in LINE_KEYS]
    if unknown:
        raise _Bad(f"unknown key {_short(unknown[0])} (known: {', '.join(LINE_KEYS)})")
    doc_id, question = obj.get("doc_id"), obj.get("question")
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise _Bad("missing or non-string 'doc_id'")
    if not isinstance(question, str) or not question.strip():
        raise _Bad("missing or non-string 'question'")
    if "label" in obj and "spans" in obj:
        raise _Bad("give either 'label' or 'spans', not both")
    if "label" not in obj and "spans" not in obj:
        raise _Bad("missing 'label' (true or false) or 'spans' (a list)")
    kind = "label" if "label" in obj else "span"
    if sub_tasks is not None:
        _question_kind(question, kind, sub_tasks)
    doc = docs.get(doc_id)
    if doc is None:
        raise _Bad(f"unknown doc id {_short(doc_id)}: not in corpus {corpus!r}" if corpus
                   else f"unknown doc id {_short(doc_id)}: not in the corpus")
    if kind == "label":
        if not isinstance(obj["label"], bool):
            raise _Bad(f"'label' must be true or false, got {type(obj['label']).__name__} {_short(obj['label'])}")
        return HumanLabel(doc_id, "label", question, label=obj["label"], line_no=line_no)
    if not isinstance(obj["spans"], list):
        raise _Bad(f"'spans' must be a list of strings or {{\"start\", \"end\"}} objects, "
                   f"got {type(obj['spans']).__name__}")
    spans: list[Span] = []
    for i, item in enumerate(obj["spans"]):
        span = _span(i, item, doc_id, doc.text)
        for j, prev in enumerate(spans):
            if (prev.start, prev.end) == (span.start, span.end):
                raise _Bad(f"span #{i} repeats span #{j} at [{span.start}, {span.end})")
        spans.append(span)
    return HumanLabel(doc_id, "span", question, spans=tuple(sorted(spans)), line_no=line_no)


def check_records(records: Iterable[tuple[int, object]], source: str | Path, docs: Mapping[str, Document],
                  sub_tasks: Sequence[SubTask] | None, corpus: str = "") -> HumanLabels:
    """:func:`check_record` on every ``(line_no, value)``, plus the duplicate check across lines.

    A ``value`` that is a :class:`ValueError` (a line that could not be parsed) becomes that line's problem.
    A second answer to the same ``(doc_id, kind, question)`` is a problem naming the first line.

    Returns:
        The :class:`HumanLabels` of ``source`` (problems name ``Path(source).name``).
    """
    path = Path(source)
    labels: list[HumanLabel] = []
    problems: list[LabelProblem] = []
    first: dict[tuple[str, str, str], int] = {}
    lines = 0
    for line_no, obj in records:
        lines += 1
        try:
            if isinstance(obj, ValueError):
                raise obj
            h = check_record(obj, line_no, docs, sub_tasks, corpus)
        except ValueError as exc:
            problems.append(LabelProblem(path.name, line_no, str(exc)))
            continue
        key = (h.doc_id, h.kind, h.question)
        if key in first:
            problems.append(LabelProblem(path.name, line_no, f"duplicate answer for doc {h.doc_id!r} and question "
                                                             f"{_short(h.question)} (first on line {first[key]})"))
            continue
        first[key] = line_no
        labels.append(h)
    return HumanLabels(path, tuple(labels), tuple(problems), lines)


def read_labels(path: str | Path, docs: Mapping[str, Document], sub_tasks: Sequence[SubTask] | None = None, *,
                corpus: str = "", max_line_bytes: int = MAX_LINE_BYTES) -> HumanLabels:
    """Read a labels file (UTF-8 JSON Lines, see the module docstring) against a corpus and a plan.

    Args:
        path: the ``<task>.labels.jsonl`` file.
        docs: the task's corpus documents by id (offsets and strings are checked against their text).
        sub_tasks: the plan's ``(kind, instruction)`` calls; ``None`` skips the question check.
        corpus: the corpus name (named in the unknown-doc message).
        max_line_bytes: the longest accepted line in bytes (default 1 MiB); a longer one is a problem.

    Returns:
        :class:`HumanLabels`: one label or one problem per non-blank line (blank lines are skipped, their
        numbers counted). Bad lines never raise; use :meth:`HumanLabels.raise_for_problems`.

    Raises:
        FileNotFoundError: ``path`` does not exist (other ``OSError`` exceptions propagate).
    """
    path = Path(path)

    def records() -> Iterable[tuple[int, object]]:
        with path.open("rb") as fh:
            for line_no, line, too_long in read_lines(fh, max_line_bytes):
                if too_long:
                    yield line_no, ValueError(f"line longer than the {max_line_bytes}-byte limit")
                elif line.strip():
                    try:
                        yield line_no, parse_json_line(line)
                    except ValueError as exc:
                        yield line_no, exc

    return check_records(records(), path, docs, sub_tasks, corpus)
