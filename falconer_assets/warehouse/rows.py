"""The typed rows Falconer stores, one dataclass per kind of record (no Dagster, no SQL).

Everything above the warehouse works with these objects; :mod:`falconer_assets.warehouse.store`
turns them into table rows and back. Spans are :class:`~falconer_assets.spans.Span` objects
everywhere except in the table columns, where they are JSON (:func:`spans_to_json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from falconer_assets.spans import Span
from falconer_assets.versions import digest

ANNOTATION_ORIGINS: tuple[str, ...] = ("sample", "random", "likely_positive", "likely_negative", "heldout_stratum",
                                       "human")
"""Values of :attr:`AnnotationRow.origin`, i.e. why the doc was annotated: ``"sample"`` for a doc of the
seeded corpus sample (every sub-task; split train or heldout); otherwise the reason the Appendix B
heuristic picked an extra training doc for that one label sub-task (split train), as returned by
:func:`falconer_assets.generator.sampling.select_label_candidates`: ``"random"`` (a uniform draw from
the scored pool), ``"likely_positive"`` or ``"likely_negative"``; ``"heldout_stratum"`` for an extra
held-out doc drawn from the high-score stratum (every sub-task; split heldout, weighted, see
:class:`falconer_assets.generator.sampling.HeldoutStratum`); ``"human"`` for an answer from the task's
labels file (:mod:`falconer_assets.inputs.labels`), which replaces the annotator's on that doc and sub-task:
its split is the doc's from sampling (train for a doc outside the sample and the extra held-out docs).
``None`` only in rows written before the column existed (those all came from the corpus sample)."""


def spans_to_json(spans: tuple[Span, ...] | list[Span]) -> str:
    """Spans as the JSON list ``[{start, end, text, score}, ...]`` stored in span columns."""
    return json.dumps([s.to_dict() for s in spans], ensure_ascii=False)


def spans_from_json(raw: str | None) -> tuple[Span, ...]:
    """Inverse of :func:`spans_to_json` (``None``/empty -> ``()``).

    Raises:
        ValueError: malformed JSON or span offsets (``json.JSONDecodeError`` is a ``ValueError``).
    """
    return tuple(Span.from_dict(d) for d in json.loads(raw or "[]"))


@dataclass(frozen=True)
class AnnotationRow:
    """One annotator answer (LLM or human) to one sub-task on one document.

    Attributes:
        kind: ``"label"`` or ``"span"``.
        instruction: the sub-task's question, as written in the plan.
        doc_id: the document's corpus id.
        split: ``"train"`` or ``"heldout"``.
        label: the Yes/No answer of a label sub-task (``None`` for span sub-tasks).
        spans: the answer spans of a span sub-task, character offsets into the document.
        dropped: answers the annotator gave that are not in the text (not aligned).
        parse_ok: ``False`` when a label reply was neither Yes nor No (or unknown, in rows older
            than the column).
        raw: the annotator's reply text.
        latency_s: wall seconds of the original LLM call.
        tokens: prompt + completion tokens of the call.
        origin: why the doc was annotated, one of :data:`ANNOTATION_ORIGINS`.
        weight: the held-out doc's weight in the eval estimate (its stratum's population share over
            its held-out docs, see :class:`~falconer_assets.generator.sampling.HeldoutStratum`);
            1.0 for training rows and for a held-out split that was not enlarged.
    """

    kind: str
    instruction: str
    doc_id: str
    split: str
    label: bool | None = None
    spans: tuple[Span, ...] = ()
    dropped: tuple[str, ...] = ()
    parse_ok: bool = True
    raw: str = ""
    latency_s: float = 0.0
    tokens: int = 0
    origin: str | None = "sample"
    weight: float = 1.0

    @property
    def sub_task(self) -> tuple[str, str]:
        """``(kind, instruction)``."""
        return self.kind, self.instruction

    @property
    def usable(self) -> bool:
        """Fit for training and eval: span answers always, label answers only when parsed."""
        return self.kind == "span" or bool(self.parse_ok)


def annotation_set_version(rows: list[AnnotationRow]) -> str:
    """Version of an annotation set: the sorted set of (kind, instruction, doc_id, split, label, spans).

    Row order and bookkeeping fields (latency, tokens, raw text, origin) do not matter; the
    same answers on the same docs give the same version (spans hashed in their stored JSON form).
    """
    keys = sorted(
        (r.kind, r.instruction, r.doc_id, r.split, None if r.label is None else bool(r.label), spans_to_json(r.spans))
        for r in rows
    )
    return digest(keys)


@dataclass(frozen=True)
class PlanRecord:
    """The plan of one task as stored in ``plans``.

    Attributes:
        task: task name.
        source: the validated plan source.
        ast_hash: hash of the normalized AST (the ``plan`` asset's data version).
        calls: the plan's primitive sub-tasks ``(kind, instruction)`` in call order.
        origin: ``"llm"`` or ``"user file <task>.plan.py"``.
        created_at: when it was written (UTC).
    """

    task: str
    source: str
    ast_hash: str
    calls: tuple[tuple[str, str], ...]
    origin: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class MinedRow:
    """One output value of a plan on one document: ``(doc_id, field, value, start, end, score, executor)``.

    ``start``/``end`` are character offsets into the document text for span fields and ``None``
    for boolean fields (whose ``value`` is ``"true"``/``"false"``). ``executor`` says who answered
    the document's primitive calls: ``"proxy"``, or ``"llm"`` when the cascade sent at least one of
    them to the LLM (:mod:`falconer_assets.cascade`).
    """

    doc_id: str
    field: str
    value: str
    start: int | None
    end: int | None
    score: float
    executor: str = "proxy"


@dataclass(frozen=True)
class RejectRow:
    """An input record that was not mined: ``doc_id`` (``None`` if unreadable), the 1-based ``line_no``
    (``None`` for a plan-runtime reject) and the ``reason``."""

    doc_id: str | None
    line_no: int | None
    reason: str


@dataclass(frozen=True)
class Throughput:
    """One speed measurement: ``executor`` ran the plan on ``docs`` documents in ``seconds`` (wall time)
    and spent ``tokens`` LLM tokens (0 for the proxy)."""

    executor: str
    docs: int
    seconds: float
    tokens: int = 0

    @property
    def docs_per_s(self) -> float:
        """Documents per second (0 when no time was measured)."""
        return self.docs / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class MetricRow:
    """One eval metric of one sub-task: ``metric`` (e.g. ``label_f1``) = ``value`` over ``n`` held-out docs."""

    kind: str
    instruction: str
    n: int
    metric: str
    value: float
