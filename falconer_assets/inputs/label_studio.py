"""Label Studio's JSON export -> a task's human labels file (``data/tasks/<task>.labels.jsonl``).

Label Studio's standard JSON export is a list of tasks, each with ``data`` (the text, and the document id
under a field of your choice) and ``annotations``, each with a ``result`` list of regions::

    {"id": 7, "data": {"doc_id": "debian:wesnoth", "text": "fantasy turn-based strategy game - ..."},
     "annotations": [{"id": 12, "was_cancelled": false, "created_at": "...", "result": [
         {"from_name": "genre", "to_name": "text", "type": "labels",
          "value": {"start": 19, "end": 27, "text": "strategy", "labels": ["genre"]}},
         {"from_name": "is_game", "to_name": "text", "type": "choices", "value": {"choices": ["Yes"]}}]}]}

A span region (``value.start``/``value.end``, optional ``value.text``, ``value.labels``) answers the span
question named by each of its labels; a choices region (``value.choices``: one of yes/no/true/false, any
case) answers the label question named by its ``from_name``. Names map to the plan's questions through
``questions`` (``{"genre": "What is the genre of the game?"}``); a name not in it is taken as the question
itself (a project whose labels are the questions needs no map). A question not in the plan is caught when
the labels file is read (:mod:`falconer_assets.inputs.labels`).

Per task, the most recent annotation that was not cancelled counts (the others are counted as
superseded); a task without one is counted and skipped. A submitted annotation answers every span question
of the export, with ``[]`` where it marked no span. Predictions are not human and are ignored. Offsets are
checked against the export's text; offsets in UTF-16 code units (older Label Studio versions, texts with
emoji) are converted to code points when that is what makes them match. Region types other than spans and
choices are counted, not imported.

Run as ``python -m falconer_assets.inputs.label_studio EXPORT.json TASK [--question NAME=QUESTION ...]``: it
checks every line against the task's corpus (ids, text, offsets) and writes the labels file, or lists the
problems and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from falconer_assets.inputs.corpus import read_corpus_folder
from falconer_assets.inputs.labels import LABELS_SUFFIX, check_records
from falconer_assets.inputs.tasks import TaskError, load_task

ID_FIELDS = ("doc_id", "id")
"""``data`` fields tried, in order, for the document id when no ``id_field`` is given."""
YES = ("yes", "true", "1")
NO = ("no", "false", "0")


class LabelStudioError(ValueError):
    """The export as a whole cannot be read (not JSON, not a list of tasks); the message says why."""


@dataclass
class LabelStudioImport:
    """What :func:`import_label_studio` made of an export.

    Attributes:
        lines: the labels-file lines (``{"doc_id", "question", "label"}`` or ``{"doc_id", "question",
            "spans": [{"start", "end", "text"}, ...]}``), sorted by doc id, question and kind.
        texts: ``{doc_id: the export's text}`` of the documents in ``lines``.
        problems: ``"task #<index> (id <id>): <problem>"`` for each task or region that could not be imported.
        counts: ``tasks``, ``tasks_annotated``, ``tasks_without_annotation``, ``annotations_superseded``,
            ``label_answers``, ``span_answers``, ``spans``, ``utf16_offsets_converted``, and
            ``other_regions`` (``{type: n}`` of regions neither spans nor choices).
    """

    lines: list[dict] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def _utf16_to_code_points(text: str, offset: int) -> int | None:
    """The code-point offset of UTF-16 offset ``offset`` in ``text`` (``None`` if it splits a surrogate pair
    or lies past the end)."""
    units = 0
    for i, ch in enumerate(text):
        if units == offset:
            return i
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > offset:
            return None
    return len(text) if units == offset else None


def _choice(values: object) -> bool:
    """The yes/no of a ``value.choices`` list; raises ``ValueError`` naming what is wrong."""
    if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str):
        raise ValueError(f"expected exactly one choice, got {json.dumps(values, ensure_ascii=False)[:80]}")
    word = values[0].strip().lower()
    if word in YES:
        return True
    if word in NO:
        return False
    raise ValueError(f"choice {values[0]!r} is not yes/no or true/false")


def _latest(annotations: list) -> tuple[dict | None, int]:
    """The most recent annotation that was not cancelled (by ``updated_at``, ``created_at``, then list order)
    and how many other submitted ones it supersedes."""
    done = [(a.get("updated_at") or a.get("created_at") or "", i, a) for i, a in enumerate(annotations)
            if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None, 0
    return max(done, key=lambda t: (str(t[0]), t[1]))[2], len(done) - 1


def import_label_studio(export: object, questions: Mapping[str, str] | None = None, *, id_field: str | None = None,
                        text_field: str = "text") -> LabelStudioImport:
    """Convert a Label Studio JSON export (already parsed) into labels-file lines.

    Args:
        export: the export: a list of tasks (see the module docstring).
        questions: ``{Label Studio name: plan question}``: a span label or a choices ``from_name`` -> the
            question it answers; names not in it are the question themselves.
        id_field: the ``data`` field holding the corpus doc id (default: ``doc_id``, else ``id``).
        text_field: the ``data`` field holding the document text (default ``text``).

    Returns:
        :class:`LabelStudioImport`; a bad task or region is a problem (named by the task's index and id),
        never an exception, and never dropped without one: a task whose doc id appears in an earlier task,
        a region with non-integer offsets (a HyperText export), offsets outside the text, a ``value.text``
        that matches neither code-point nor UTF-16 offsets, a choice that is not yes/no, two answers to one
        question.

    Raises:
        LabelStudioError: ``export`` is not a list.
    """
    if not isinstance(export, list):
        raise LabelStudioError(f"a Label Studio JSON export is a list of tasks, got {type(export).__name__}")
    questions = dict(questions or {})
    out = LabelStudioImport()
    counts: Counter = Counter()
    other: Counter = Counter()
    span_questions = []
    for task in export:  # every span question of the export: a submitted annotation answers each
        for ann in (task.get("annotations") or []) if isinstance(task, dict) else []:
            for region in (ann.get("result") or []) if isinstance(ann, dict) else []:
                value = region.get("value") if isinstance(region, dict) else None
                if isinstance(value, dict) and isinstance(value.get("labels"), list):
                    span_questions += [questions.get(n, n) for n in value["labels"] if isinstance(n, str)]
    span_questions = list(dict.fromkeys(span_questions))
    first_task: dict[str, int] = {}
    for index, task in enumerate(export):
        counts["tasks"] += 1
        where = f"task #{index}" + (f" (id {task.get('id')})" if isinstance(task, dict) and "id" in task else "")

        def problem(text: str) -> None:
            out.problems.append(f"{where}: {text}")

        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            problem("no 'data' object")
            continue
        fields = (id_field,) if id_field else ID_FIELDS
        doc_id = next((data[f] for f in fields if f in data), None)
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id.strip():
            problem(f"no document id: 'data' has no string field {' or '.join(map(repr, fields))}")
            continue
        text = data.get(text_field)
        if not isinstance(text, str):
            problem(f"no text: 'data' has no string field {text_field!r}")
            continue
        annotation, superseded = _latest(task.get("annotations") or [])
        counts["annotations_superseded"] += superseded
        if annotation is None:
            counts["tasks_without_annotation"] += 1
            continue
        if doc_id in first_task:
            problem(f"doc {doc_id!r} is also annotated in task #{first_task[doc_id]}")
            continue
        first_task[doc_id] = index
        counts["tasks_annotated"] += 1
        labels: dict[str, bool] = {}
        spans: dict[str, list[dict]] = {q: [] for q in span_questions}
        failed: set[str] = set()  # questions with a bad region: no line (an empty answer would be wrong)
        for region in annotation.get("result") or []:
            value = region.get("value") if isinstance(region, dict) else None
            if not isinstance(value, dict):  # e.g. a relation between two regions: counted, not imported
                if isinstance(region, dict) and isinstance(region.get("type"), str):
                    other[region["type"]] += 1
                else:
                    problem(f"a region that is neither spans nor choices: {json.dumps(region)[:80]}")
                continue
            if "choices" in value:
                name = region.get("from_name")
                if not isinstance(name, str):
                    problem(f"choices without a 'from_name': {json.dumps(region)[:80]}")
                    continue
                question = questions.get(name, name)
                try:
                    answer = _choice(value["choices"])
                except ValueError as exc:
                    problem(f"choices {name!r}: {exc}")
                    continue
                if question in labels:
                    problem(f"two answers to {question!r}")
                    continue
                labels[question] = answer
            elif isinstance(value.get("labels"), list):
                start, end = value.get("start"), value.get("end")
                names = [questions.get(n, n) for n in value["labels"] if isinstance(n, str)]
                if not names or len(names) != len(value["labels"]):
                    problem(f"span labels {json.dumps(value['labels'])[:80]} must be a non-empty list of names")
                    continue
                if any(not isinstance(v, int) or isinstance(v, bool) for v in (start, end)):
                    failed.update(names)
                    problem(f"span {value.get('labels')}: offsets {start!r}, {end!r} are not character offsets "
                            "(a Text tag is needed, not HyperText)")
                    continue
                said = value.get("text")
                if isinstance(said, str) and text[start:end] != said:
                    s16, e16 = _utf16_to_code_points(text, start), _utf16_to_code_points(text, end)
                    if s16 is not None and e16 is not None and text[s16:e16] == said:
                        start, end = s16, e16
                        counts["utf16_offsets_converted"] += 1
                    else:
                        failed.update(names)
                        problem(f"span {said!r} at [{start}, {end}): the text there is {text[start:end][:60]!r}")
                        continue
                if not 0 <= start < end <= len(text):
                    failed.update(names)
                    problem(f"span at [{start}, {end}) is outside the text ({len(text)} characters)")
                    continue
                for question in names:
                    spans.setdefault(question, []).append({"start": start, "end": end, "text": text[start:end]})
            else:
                other[str(region.get("type"))] += 1
        for question, answer in labels.items():
            out.lines.append({"doc_id": doc_id, "question": question, "label": answer})
        for question, found in spans.items():
            if question in failed:
                continue
            unique = list({(s["start"], s["end"]): s for s in found}.values())
            out.lines.append({"doc_id": doc_id, "question": question,
                              "spans": sorted(unique, key=lambda s: (s["start"], s["end"]))})
        out.texts[doc_id] = text
    out.lines.sort(key=lambda d: (d["doc_id"], d["question"], "label" in d))
    counts["label_answers"] = sum("label" in d for d in out.lines)
    counts["span_answers"] = sum("spans" in d for d in out.lines)
    counts["spans"] = sum(len(d.get("spans", ())) for d in out.lines)
    out.counts = {k: counts[k] for k in ("tasks", "tasks_annotated", "tasks_without_annotation",
                                          "annotations_superseded", "label_answers", "span_answers", "spans",
                                          "utf16_offsets_converted")}
    out.counts["other_regions"] = dict(other)
    return out


def read_export(path: str | Path) -> object:
    """The parsed JSON of an export file. Raises ``LabelStudioError`` naming the file if it is not JSON,
    ``OSError`` if it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelStudioError(f"{path}: not a JSON export: {exc}") from exc


def write_labels(path: str | Path, lines: Sequence[dict]) -> None:
    """Write ``lines`` as UTF-8 JSON Lines at ``path``, atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in lines), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m falconer_assets.inputs.label_studio EXPORT TASK``: import, check against the task's corpus,
    write ``<data-dir>/tasks/<TASK>.labels.jsonl`` (or ``--out``).

    Returns:
        0 when written; 1 when the export has problems or does not match the corpus (nothing written; the
        problems are printed); 2 for a bad argument, task or export file, or an existing output without
        ``--force``.
    """
    parser = argparse.ArgumentParser(prog="python -m falconer_assets.inputs.label_studio",
                                     description="Label Studio JSON export -> data/tasks/<task>.labels.jsonl")
    parser.add_argument("export", help="the JSON export file (Export -> JSON in Label Studio)")
    parser.add_argument("task", help="the task name (data/tasks/<task>.yaml)")
    parser.add_argument("--data-dir", default="data", help="the data folder (default: data)")
    parser.add_argument("--question", action="append", default=[], metavar="NAME=QUESTION",
                        help="a Label Studio label or choices name and the plan question it answers (repeatable)")
    parser.add_argument("--id-field", default=None, help="the data field with the doc id (default: doc_id, else id)")
    parser.add_argument("--text-field", default="text", help="the data field with the text (default: text)")
    parser.add_argument("--out", default=None, help="output file (default: <data-dir>/tasks/<task>.labels.jsonl)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    questions = {}
    for item in args.question:
        name, sep, question = item.partition("=")
        if not sep or not name or not question.strip():
            print(f"--question {item!r}: expected NAME=QUESTION", file=sys.stderr)
            return 2
        questions[name] = question
    data_dir = Path(args.data_dir)
    try:
        task = load_task(data_dir / "tasks" / f"{args.task}.yaml", data_dir)
        result = import_label_studio(read_export(args.export), questions, id_field=args.id_field,
                                     text_field=args.text_field)
        corpus = read_corpus_folder(data_dir / "corpora", task.corpus)
    except (TaskError, LabelStudioError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else data_dir / "tasks" / f"{task.name}{LABELS_SUFFIX}"
    problems = list(result.problems)
    problems += [f"doc {doc_id!r}: the export's text differs from corpus {task.corpus!r}'s (offsets would not match)"
                 for doc_id, text in result.texts.items()
                 if doc_id in corpus.by_id and corpus.by_id[doc_id].text != text]
    checked = check_records(enumerate(result.lines, 1), out, corpus.by_id, None, task.corpus)
    problems += [str(p) for p in checked.problems]
    print(f"{args.export}: {json.dumps(result.counts)}")
    if problems:
        print(f"{len(problems)} problem(s); nothing written:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    if out.exists() and not args.force:
        print(f"error: {out} exists (use --force to replace it)", file=sys.stderr)
        return 2
    write_labels(out, result.lines)
    print(f"wrote {len(result.lines)} labels ({checked.counts()['docs']} docs) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
