"""Running a validated plan over a corpus in batches and flattening its output to table rows.

Paper section 3.2/3.6: the plan is executed over the whole corpus with the proxy implementing
``get_label``/``get_span``. Every input document ends up either processed (with zero or more
rows) or rejected with a reason; the counts always add up (see :class:`MiningStats`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from falconer_assets.inputs.corpus import Document
from falconer_assets.plan.sandbox import PlanRuntimeError, ValidatedPlan, run_plan
from falconer_assets.spans import Span
from falconer_assets.warehouse.rows import MinedRow, RejectRow


@dataclass
class MiningStats:
    """Counts of one mining pass: ``docs_in == docs_processed + docs_rejected``."""

    docs_in: int = 0
    docs_processed: int = 0
    docs_retrieved: int = 0
    docs_rejected: int = 0
    rows: int = 0
    seconds: float = 0.0
    rows_per_field: dict[str, int] = field(default_factory=dict)

    @property
    def docs_per_s(self) -> float:
        """Throughput in documents per second of wall time (0 when nothing ran)."""
        return self.docs_in / self.seconds if self.seconds > 0 else 0.0


def result_rows(doc_id: str, result: dict | None, executor: str = "proxy") -> list[MinedRow]:
    """Flatten one plan result (``None`` or ``{field: list[Span] | bool}``) into rows marked ``executor``."""
    if result is None:
        return []
    rows: list[MinedRow] = []
    for name, value in result.items():
        if isinstance(value, bool):
            rows.append(MinedRow(doc_id, name, "true" if value else "false", None, None, 1.0, executor))
            continue
        for span in value:
            assert isinstance(span, Span)
            rows.append(MinedRow(doc_id, name, span.text, span.start, span.end, float(span.score), executor))
    return rows


def _batches(docs: Sequence[Document], size: int) -> Iterable[Sequence[Document]]:
    for i in range(0, len(docs), size):
        yield docs[i : i + size]


def mine_documents(
    plan: ValidatedPlan,
    docs: Sequence[Document],
    get_label: Callable[[list[str], str], list[bool]],
    get_span: Callable[[list[str], str], list[list[Span]]],
    batch_size: int = 256,
    log: Callable[[str], None] = lambda _msg: None,
    executor_of: Callable[[str], str] = lambda _text: "proxy",
) -> tuple[list[MinedRow], list[RejectRow], MiningStats]:
    """Execute ``plan`` over ``docs`` in batches of ``batch_size`` documents.

    A batch whose plan run raises :class:`PlanRuntimeError` is retried one document at a time;
    a document that still fails is rejected with the error text, so one bad record never sinks
    the corpus.

    ``executor_of(text)`` names who answered a document (asked after its batch ran; the cascade's
    ``"llm"`` for documents it routed, see :mod:`falconer_assets.cascade`); it marks the rows.

    Returns:
        ``(rows, rejects, stats)``; a reject names the document and the plan error (``line_no`` ``None``).

    Raises:
        ValueError: if ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stats = MiningStats(docs_in=len(docs))
    rows: list[MinedRow] = []
    rejects: list[RejectRow] = []
    t0 = time.perf_counter()

    def keep(doc: Document, result: dict | None) -> None:
        doc_rows = result_rows(doc.id, result, executor_of(doc.text))
        stats.docs_processed += 1
        stats.docs_retrieved += result is not None
        rows.extend(doc_rows)
        for r in doc_rows:
            stats.rows_per_field[r.field] = stats.rows_per_field.get(r.field, 0) + 1

    for batch in _batches(docs, batch_size):
        texts = [d.text for d in batch]
        try:
            results = run_plan(plan, texts, get_label, get_span)
        except PlanRuntimeError as exc:
            log(f"plan failed on a batch of {len(batch)} ({exc}); retrying one document at a time")
            for doc in batch:
                try:
                    keep(doc, run_plan(plan, [doc.text], get_label, get_span)[0])
                except PlanRuntimeError as doc_exc:
                    rejects.append(RejectRow(doc.id, None, f"plan error: {doc_exc}"))
                    stats.docs_rejected += 1
        else:
            for doc, result in zip(batch, results):
                keep(doc, result)
        done = stats.docs_processed + stats.docs_rejected
        elapsed = time.perf_counter() - t0
        log(f"mined {done}/{len(docs)} docs, {len(rows)} rows, {done / max(elapsed, 1e-9):.1f} docs/s")
    stats.rows = len(rows)
    stats.seconds = time.perf_counter() - t0
    return rows, rejects, stats
