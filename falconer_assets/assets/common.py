"""Small helpers shared by the asset modules (paths, corpus loading, DuckDB reads)."""


import json
from pathlib import Path

import dagster as dg

from falconer_assets.inputs.corpus import Document, Reject, corpus_file_paths, read_corpus_files
from falconer_assets.plan.sandbox import PlanValidationError, ValidatedPlan, validate_plan
from falconer_assets.spans import Span
from falconer_assets.inputs.tasks import Task, TaskError, load_task


def load_corpus(data_dir: Path, corpus: str) -> tuple[list[Document], list[Reject]]:
    """Read every file of a corpus (``<data_dir>/corpora/<corpus>/*.jsonl``, ids unique across files,
    see :func:`~falconer_assets.inputs.corpus.read_corpus_files`); raises ``dg.Failure`` naming the
    folder when it has no file."""
    paths = corpus_file_paths(Path(data_dir) / "corpora", corpus)
    if not paths:
        raise dg.Failure(f"corpus {corpus!r} has no file: expected {Path(data_dir) / 'corpora' / corpus}/*.jsonl")
    return read_corpus_files(paths)


def task_for_partition(data_dir: Path, name: str) -> Task:
    """The task of a ``tasks`` partition, read from ``<data_dir>/tasks/<name>.yaml`` at run time.

    Raises:
        dg.Failure: the file is gone or malformed (the message names the file and the problem).
    """
    path = Path(data_dir) / "tasks" / f"{name}.yaml"
    if not path.exists():
        raise dg.Failure(f"task {name!r}: {path} does not exist (deleted? the task sensor removes its partition)")
    try:
        return load_task(path)
    except TaskError as exc:
        raise dg.Failure(f"task {name!r} cannot be loaded: {exc}") from exc


def parse_plan(source: str, origin: str) -> ValidatedPlan:
    """Validate plan source; raises ``dg.Failure`` naming ``origin`` and the validation error."""
    try:
        return validate_plan(source)
    except PlanValidationError as exc:
        raise dg.Failure(f"plan from {origin} is invalid: {exc}") from exc


def annotation_rows(conn, task_name: str, split: str) -> list[tuple]:
    """``(kind, instruction, doc_id, label, spans_json, parse_ok)`` rows of ``task_name`` in ``split``
    (``"train"`` or ``"heldout"``), ordered by sub-task then doc id.

    ``"train"`` holds the corpus sample's training docs (every sub-task) and, per label sub-task,
    the extra docs the Appendix B heuristic picked (``annotations.origin`` other than
    ``"sample"``); ``"heldout"`` is only ever the random corpus sample."""
    return conn.execute(
        "SELECT kind, instruction, doc_id, label, spans, parse_ok FROM annotations "
        "WHERE task = ? AND split = ? ORDER BY kind, instruction, doc_id", [task_name, split]
    ).fetchall()


def spans_json(spans: list[Span]) -> str:
    """Spans as a JSON list of ``{start, end, text, score}``."""
    return json.dumps([s.to_dict() for s in spans], ensure_ascii=False)


def spans_from_json(raw: str | None) -> list[Span]:
    """Inverse of :func:`spans_json` (``None``/empty -> ``[]``)."""
    return [Span.from_dict(d) for d in json.loads(raw or "[]")]


def md_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats are shown with 3 decimals."""

    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
