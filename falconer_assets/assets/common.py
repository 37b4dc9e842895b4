"""Small helpers shared by the asset modules (paths, corpus loading, DuckDB reads)."""


import json
from pathlib import Path

import dagster as dg

from falconer_assets.core.corpus import Document, Reject, read_corpus
from falconer_assets.core.plan_sandbox import PlanValidationError, ValidatedPlan, validate_plan
from falconer_assets.core.spans import Span


def corpus_path(data_dir: Path, corpus: str) -> Path:
    """``<data_dir>/corpora/<corpus>.jsonl``."""
    return Path(data_dir) / "corpora" / f"{corpus}.jsonl"


def load_corpus(data_dir: Path, corpus: str) -> tuple[list[Document], list[Reject]]:
    """Read a corpus; raises ``dg.Failure`` naming the path when the file is missing."""
    path = corpus_path(data_dir, corpus)
    if not path.exists():
        raise dg.Failure(f"corpus file {path} does not exist (task corpus {corpus!r})")
    return read_corpus(path)


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
