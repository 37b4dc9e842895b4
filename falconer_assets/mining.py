"""Running a validated plan over a corpus in batches and flattening its output to table rows.

Paper section 3.2/3.6: the plan is executed over the whole corpus with the proxy implementing
``get_label``/``get_span``. Every input document ends up either processed (with zero or more
rows) or rejected with a reason; the counts always add up (see :class:`MiningStats`).

Each batch runs in the limited plan worker (:mod:`falconer_assets.plan.worker`; the primitives run
here, in this process): a plan that exhausts its memory, CPU or wall-clock limit or crashes its
process fails that batch like any plan error, and costs the documents it fails on, never the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from falconer_assets.inputs.corpus import Document
from falconer_assets.plan.limits import DEFAULT_LIMITS, PlanLimits
from falconer_assets.plan.sandbox import PlanRuntimeError, ValidatedPlan, run_plan
from falconer_assets.plan.worker import run_plan_isolated
from falconer_assets.progress import progress
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


def batches(docs: Sequence[Document], size: int) -> Iterable[Sequence[Document]]:
    """Consecutive slices of ``docs`` of ``size`` documents (the last may be shorter), in input order.

    Both executors (:func:`mine_documents` and :mod:`falconer_assets.mining_ray`) cut the corpus
    here, so every plan run sees the same documents together (the proxy pads each forward pass to
    its longest window, so the batch a text runs in is part of what makes its scores reproducible).
    """
    for i in range(0, len(docs), size):
        yield docs[i : i + size]


@dataclass
class BatchResult:
    """What one plan batch produced: its rows and plan-runtime rejects, in the batch's document order.

    ``docs_processed + len(rejects)`` is the batch's size; ``docs_retrieved`` counts the processed
    documents whose plan result was not ``None``.
    """

    rows: list[MinedRow] = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)
    docs_processed: int = 0
    docs_retrieved: int = 0


def mine_batch(
    plan: ValidatedPlan,
    batch: Sequence[Document],
    get_label: Callable[[list[str], str], list[bool]],
    get_span: Callable[[list[str], str], list[list[Span]]],
    log: Callable[[str], None] = lambda _msg: None,
    executor_of: Callable[[str], str] = lambda _text: "proxy",
    limits: PlanLimits = DEFAULT_LIMITS,
    in_process: bool = False,
) -> BatchResult:
    """Run ``plan`` once over ``batch`` in the limited plan worker (one
    :func:`~falconer_assets.plan.worker.run_plan_isolated` call; ``in_process=True``: one
    :func:`~falconer_assets.plan.sandbox.run_plan` call here, without the OS limits, for tests and
    benchmarks).

    If the batch raises :class:`PlanRuntimeError` (a plan error, a cap or limit of ``limits``
    exceeded, the worker killed or crashed) it is retried one document at a time (``log`` says so);
    a document that still fails becomes a :class:`RejectRow` (``line_no`` ``None``, reason
    ``"plan error: ..."``, e.g. ``"plan error: plan process died with SIGSEGV"``).
    ``executor_of(text)`` marks each document's rows; it is asked after the batch ran. This is the
    per-batch step of :func:`mine_documents` and of the Ray actors of :mod:`falconer_assets.mining_ray`.

    Raises:
        PlanValidationError: ``plan.source`` does not validate.
        falconer_assets.plan.worker.PlanWorkerError: the worker process cannot be started.
    """
    out = BatchResult()
    run = run_plan if in_process else run_plan_isolated

    def keep(doc: Document, result: dict | None) -> None:
        out.rows.extend(result_rows(doc.id, result, executor_of(doc.text)))
        out.docs_processed += 1
        out.docs_retrieved += result is not None

    texts = [d.text for d in batch]
    try:
        results = run(plan, texts, get_label, get_span, limits)
    except PlanRuntimeError as exc:
        log(f"plan failed on a batch of {len(batch)} ({exc}); retrying one document at a time")
        for doc in batch:
            try:
                keep(doc, run(plan, [doc.text], get_label, get_span, limits)[0])
            except PlanRuntimeError as doc_exc:
                out.rejects.append(RejectRow(doc.id, None, f"plan error: {doc_exc}"))
    else:
        for doc, result in zip(batch, results):
            keep(doc, result)
    return out


def add_batch(stats: MiningStats, rows: list[MinedRow], rejects: list[RejectRow], batch: BatchResult) -> None:
    """Fold one :class:`BatchResult` into the running ``stats``, ``rows`` and ``rejects`` (in place).

    ``stats.rows`` and ``stats.seconds`` are left to the caller (set once at the end of a pass).
    """
    rows.extend(batch.rows)
    rejects.extend(batch.rejects)
    stats.docs_processed += batch.docs_processed
    stats.docs_retrieved += batch.docs_retrieved
    stats.docs_rejected += len(batch.rejects)
    for r in batch.rows:
        stats.rows_per_field[r.field] = stats.rows_per_field.get(r.field, 0) + 1


def mine_documents(
    plan: ValidatedPlan,
    docs: Sequence[Document],
    get_label: Callable[[list[str], str], list[bool]],
    get_span: Callable[[list[str], str], list[list[Span]]],
    batch_size: int = 256,
    log: Callable[[str], None] = lambda _msg: None,
    executor_of: Callable[[str], str] = lambda _text: "proxy",
    limits: PlanLimits = DEFAULT_LIMITS,
    in_process: bool = False,
    progress_desc: str = "mine",
) -> tuple[list[MinedRow], list[RejectRow], MiningStats]:
    """Execute ``plan`` over ``docs`` in batches of ``batch_size`` documents, from this process.

    Each batch is one :func:`mine_batch` (in the limited plan worker under ``limits``; the primitives
    run in this process; ``in_process=True`` runs the plan here too): a batch whose plan run raises
    :class:`PlanRuntimeError` is retried one document at a time; a document that still fails is
    rejected with the error text, so one bad record (or a plan that crashes on it) never sinks the
    corpus.

    ``executor_of(text)`` names who answered a document (asked after its batch ran; the cascade's
    ``"llm"`` for documents it routed, see :mod:`falconer_assets.cascade`); it marks the rows.

    Returns:
        ``(rows, rejects, stats)``; a reject names the document and the plan error (``line_no`` ``None``).

    Raises:
        ValueError: if ``batch_size < 1``.
        PlanValidationError, PlanWorkerError: as :func:`mine_batch`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stats = MiningStats(docs_in=len(docs))
    rows: list[MinedRow] = []
    rejects: list[RejectRow] = []
    t0 = time.perf_counter()
    with progress(progress_desc, len(docs), "doc") as bar:  # a bar in `falconer run`
        for batch in batches(docs, batch_size):
            add_batch(stats, rows, rejects,
                      mine_batch(plan, batch, get_label, get_span, log, executor_of, limits, in_process))
            done = stats.docs_processed + stats.docs_rejected
            elapsed = time.perf_counter() - t0
            log(f"mined {done}/{len(docs)} docs, {len(rows)} rows, {done / max(elapsed, 1e-9):.1f} docs/s")
            bar.update(len(batch), rows=len(rows), rejected=stats.docs_rejected)
    stats.rows = len(rows)
    stats.seconds = time.perf_counter() - t0
    return rows, rejects, stats
