"""Render one task's report as a self-contained HTML page (issue 14, item 3).

The page shows what a user would otherwise reconstruct by hand from table rows: a sample of
documents with every mined span highlighted in place (hover: field and score), boolean fields as
badges, value counts per field, the eval table with 95% intervals and n, and the proxy's training
curve (dev score per epoch). Everything is inline (CSS, the curve as a base64 PNG), so the file can
be opened from disk, attached to an issue or served as is. Templating is Jinja2 with autoescaping:
document texts, values and plan code are untrusted and are escaped, never interpreted.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import jinja2

from falconer_assets.report.highlight import Mark, segments
from falconer_assets.warehouse.rows import MetricRow, MinedRow

PALETTE = ("#ffd54f", "#81d4fa", "#a5d6a7", "#f48fb1", "#ce93d8", "#ffab91", "#b0bec5", "#e6ee9c")
"""Highlight colours, one per span field in name order (cycled beyond eight fields)."""


@dataclass(frozen=True)
class DocumentView:
    """One sampled document and what was mined from it.

    Attributes:
        doc_id: the corpus id.
        text: the document text the offsets refer to.
        rows: the document's mined rows (span rows carry ``start``/``end``; boolean rows do not).
    """

    doc_id: str
    text: str
    rows: tuple[MinedRow, ...]


@dataclass(frozen=True)
class ReportData:
    """Everything one task's report shows.

    Attributes:
        task, instruction, corpus: the task file's values.
        plan_source: the plan's Python code as stored by the ``plan`` asset.
        totals: ``{"rows", "docs", "files", "rejects"}``: mined rows, documents with at least one
            row, corpus files mined, rejected records.
        metrics: the task's ``eval_metrics`` rows.
        value_counts: per field, ``(value, count)`` pairs, most frequent first.
        documents: the sampled documents.
        curve: the proxy's training curve, ``[{"epoch", "loss", "dev_score"}]`` (epoch 0: the
            starting weights, ``loss`` None); empty when unknown.
        notes: extra lines shown under the title (e.g. where the rows are, the inference precision).
    """

    task: str
    instruction: str
    corpus: str
    plan_source: str
    totals: Mapping[str, int]
    metrics: Sequence[MetricRow]
    value_counts: Mapping[str, Sequence[tuple[str, int]]]
    documents: Sequence[DocumentView]
    curve: Sequence[Mapping] = ()
    notes: Sequence[str] = field(default_factory=tuple)


def eval_table(metrics: Sequence[MetricRow]) -> list[dict]:
    """One row per sub-task: ``{"kind", "instruction", "n", "f1", "low", "high", "precision",
    "recall", "word_f1", "word_low", "word_high", "gold"}`` (missing values None), in the order the
    sub-tasks first appear (labels before spans as ``eval`` writes them)."""
    grouped: dict[tuple[str, str], dict] = {}
    for m in metrics:
        row = grouped.setdefault((m.kind, m.instruction), {"kind": m.kind, "instruction": m.instruction, "n": m.n})
        row[m.metric] = m.value
    out = []
    for (kind, _), r in grouped.items():
        p = "label" if kind == "label" else "span"
        out.append({
            "kind": kind, "instruction": r["instruction"], "n": r["n"],
            "f1": r.get(f"{p}_f1"), "low": r.get(f"{p}_f1_low"), "high": r.get(f"{p}_f1_high"),
            "precision": r.get(f"{p}_precision"), "recall": r.get(f"{p}_recall"),
            "word_f1": r.get("word_f1"), "word_low": r.get("word_f1_low"), "word_high": r.get("word_f1_high"),
            "gold": r.get("gold_positive" if kind == "label" else "gold_spans"),
        })
    return out


def curve_png(curve: Sequence[Mapping]) -> str | None:
    """The training curve as a base64 PNG: dev score per epoch (left axis, when the proxy was trained
    with a dev split) and mean training loss per epoch (right axis); None for an empty curve."""
    dev = [(c["epoch"], c["dev_score"]) for c in curve if c.get("dev_score") is not None]
    losses = [(c["epoch"], c["loss"]) for c in curve if c.get("loss") is not None]
    if not dev and not losses:
        return None
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.add_subplot()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0: starting weights)")
    ax.grid(alpha=0.3)
    lines = []
    if dev:
        lines += ax.plot([e for e, _ in dev], [v for _, v in dev], marker="o", color="#1565c0", label="dev score")
        ax.set_ylabel("dev score (mean F1)")
        ax.set_ylim(0, 1.02)
    if losses:
        ax2 = ax.twinx() if dev else ax
        lines += ax2.plot([e for e, _ in losses], [v for _, v in losses], marker=".", color="#757575",
                          label="train loss")
        ax2.set_ylabel("train loss" + ("" if dev else " (no dev split: loss only)"))
    ax.legend(handles=lines, loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _colours(data: ReportData) -> dict[str, str]:
    span_fields = sorted({r.field for d in data.documents for r in d.rows if r.start is not None}
                         | {f for f in data.value_counts})
    return {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(span_fields)}


def _document_context(doc: DocumentView) -> dict:
    marks = [Mark(r.start, r.end, r.field, r.score) for r in doc.rows if r.start is not None and r.end is not None]
    flags = [(r.field, r.value, r.score) for r in doc.rows if r.start is None]
    return {"doc_id": doc.doc_id, "segments": segments(doc.text, marks), "flags": flags, "n_spans": len(marks)}


def _counts_context(value_counts: Mapping[str, Sequence[tuple[str, int]]]) -> list[dict]:
    out = []
    for fld, pairs in value_counts.items():
        top = max((c for _, c in pairs), default=1)
        out.append({"field": fld, "values": [(v, c, 100.0 * c / top) for v, c in pairs]})
    return out


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["f3"] = lambda v: "–" if v is None else f"{v:.2f}"


def render_report(data: ReportData) -> str:
    """The report page as one HTML string (UTF-8, self-contained).

    Raises:
        ValueError: a mined row's offsets do not fit its document (see
            :func:`~falconer_assets.report.highlight.segments`).
    """
    from falconer_assets.report.template import TEMPLATE

    colours = _colours(data)
    return _ENV.from_string(TEMPLATE).render(
        d=data, colours=colours, evals=eval_table(data.metrics), curve=curve_png(data.curve),
        documents=[_document_context(doc) for doc in data.documents], counts=_counts_context(data.value_counts),
    )
