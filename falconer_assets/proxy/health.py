"""Health checks of a fine-tuned proxy: has it collapsed, and does it say "yes" as often as the annotator?

Pure functions over predictions and annotations (no torch, no Dagster); the ``proxy_checkpoint`` and
``mined`` assets turn their findings into asset checks. A *finding* is one sentence that says what
happened, with the numbers, and what to do about it.

Two failure modes motivate them (issue 10): a fine-tuned proxy can collapse to one answer (an
NTE-pretrained metamodel that scored label F1 0.72 zero-shot said "No" to every document after 64
training samples; a genre extractor trained on few spans finds none), and a proxy can say "yes" far
more often than the annotator on the same kind of documents (97% against 39%) while its scores on a
small held-out split look acceptable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from falconer_assets.inputs.corpus import Document
from falconer_assets.spans import Span
from falconer_assets.warehouse.rows import AnnotationRow

LabelFn = Callable[[list[str], str], list[bool]]
"""The ``get_label`` primitive: ``(texts, instruction) -> [yes?, ...]``, one answer per text."""

SpanFn = Callable[[list[str], str], list[list[Span]]]
"""The ``get_span`` primitive: ``(texts, instruction) -> [[Span, ...], ...]``, one list per text."""

_REMEDIES = ("annotate more training docs (raise the annotations config's `label_extra_ratio`: the Appendix B "
             "likely-positive picks also feed the span sub-tasks), add a `quality:` block to the task so the "
             "cascade sends the proxy's uncertain docs to the LLM, or fine-tune another base model "
             "(`ProxyResource.base_model`)")
"""What a user can do about a collapsed or miscalibrated proxy (every finding ends with it)."""


MIN_COLLAPSE_EVIDENCE = 5
"""Contradicted held-out docs a collapse needs to be conclusive (and block mining).

A collapsed proxy gives one answer everywhere; the evidence is the number ``k`` of held-out docs where
that answer contradicts the annotator (docs the annotator said the other class for, or docs where it
found spans). A proxy that gets at least half of such docs right would still miss all ``k`` with
probability at most ``0.5 ** k``: 3.1% for ``k = 5``, below the 5% of a conventional test; for
``k <= 4`` (12.5% to 6.3%) a tiny held-out split cannot tell a collapse from bad luck."""


@dataclass(frozen=True)
class Collapse:
    """A proxy that gave one answer on every held-out doc of a sub-task where the annotator did not.

    Attributes:
        finding: one sentence with the numbers and what to do about it.
        evidence: held-out docs where the proxy's one answer contradicts the annotator (>= 1).
    """

    finding: str
    evidence: int

    @property
    def conclusive(self) -> bool:
        """``evidence >= MIN_COLLAPSE_EVIDENCE``: strong enough to block mining."""
        return self.evidence >= MIN_COLLAPSE_EVIDENCE


def collapse_of(kind: str, instruction: str, annotator: Sequence, proxy: Sequence) -> Collapse | None:
    """The collapse of the proxy on one sub-task's held-out documents, if it collapsed.

    For a label sub-task the proxy has collapsed when it gives the same answer to every held-out doc
    while the annotator answered both "yes" and "no" on them; for a span sub-task, when the annotator
    found at least one span in the held-out docs and the proxy found none at all. The finding says
    whether the evidence is conclusive (see :data:`MIN_COLLAPSE_EVIDENCE`).

    Args:
        kind: ``"label"`` or ``"span"``.
        instruction: the sub-task's question (quoted in the finding).
        annotator: the annotator's answers on the held-out docs, one per doc: ``bool`` for labels,
            a sequence of :class:`~falconer_assets.spans.Span` (possibly empty) for spans.
        proxy: the proxy's answers on the same docs, same order and types.

    Returns:
        ``None`` when healthy (also with no held-out doc, or when the annotator itself used one class
        or found no span, so there is nothing to compare), else the :class:`Collapse`.

    Raises:
        ValueError: on an unknown ``kind`` or when ``annotator`` and ``proxy`` differ in length.
    """
    if kind not in ("label", "span"):
        raise ValueError(f"kind must be 'label' or 'span', got {kind!r}")
    if len(annotator) != len(proxy):
        raise ValueError(f"{len(annotator)} annotator answers but {len(proxy)} proxy answers")
    n = len(annotator)
    if kind == "label":
        yes = sum(bool(a) for a in annotator)
        answers = {bool(p) for p in proxy}
        if n == 0 or yes in (0, n) or len(answers) != 1:
            return None
        said_yes = answers.pop()
        evidence = n - yes if said_yes else yes
        text = (f'label sub-task "{instruction}": the proxy answered "{"yes" if said_yes else "no"}" on all {n} '
                f"held-out docs, where the annotator said yes on {yes} and no on {n - yes}; the proxy has "
                "collapsed to one class.")
    else:
        gold_spans = sum(len(_spans(a)) for a in annotator)
        if gold_spans == 0 or any(_spans(p) for p in proxy):
            return None
        evidence = sum(bool(_spans(a)) for a in annotator)
        text = (f'span sub-task "{instruction}": the annotator found {gold_spans} spans in {evidence} of {n} '
                "held-out docs, the proxy found none; the extractor has collapsed to extracting nothing.")
    if evidence < MIN_COLLAPSE_EVIDENCE:
        text += (f" Not conclusive: with {evidence} contradicted held-out doc(s), a proxy right on half of them "
                 f"would miss all with probability {0.5 ** evidence:.0%}, so mining is not blocked (a "
                 f"conclusive collapse needs {MIN_COLLAPSE_EVIDENCE}; annotate more docs to tell).")
    return Collapse(f"{text} To fix: {_REMEDIES}.", evidence)


def _spans(answer) -> Sequence[Span]:
    """One doc's span answer as a sequence (``None`` counts as no span)."""
    return () if answer is None else answer


def yes_rate_interval(yes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a yes-rate: the range of true rates consistent with ``yes`` of ``n``.

    The Wilson interval (Wilson 1927; Brown, Cai and DasGupta 2001, "Interval Estimation for a
    Binomial Proportion") keeps its coverage near ``confidence`` for small ``n`` and rates near 0 or
    1, where the normal (Wald) interval collapses to a point; it needs only the normal quantile.

    Args:
        yes: number of "yes" answers, ``0 <= yes <= n``.
        n: number of answers.
        confidence: two-sided coverage in (0, 1), e.g. 0.95.

    Returns:
        ``(low, high)``, shares in [0, 1]; ``(0.0, 1.0)`` when ``n == 0`` (nothing is known).

    Raises:
        ValueError: on ``n < 0``, ``yes`` outside ``[0, n]`` or ``confidence`` outside (0, 1).
    """
    if n < 0 or not 0 <= yes <= n:
        raise ValueError(f"need 0 <= yes <= n, got yes={yes}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = yes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact at the edges (no rounding noise such as 1e-17 below 0 or above p)
    low = 0.0 if yes == 0 else max(0.0, centre - half)
    high = 1.0 if yes == n else min(1.0, centre + half)
    return low, high


def yes_rate_finding(instruction: str, proxy_yes: int, proxy_n: int, annotator_yes: int, annotator_n: int,
                     confidence: float = 0.95) -> str | None:
    """A finding when the proxy's yes-rate on mined documents is outside the annotator's interval.

    The annotator's answers on the random corpus sample (both splits) estimate the corpus' yes-rate;
    :func:`yes_rate_interval` (Wilson, ``confidence``) gives the rates consistent with them. A proxy
    whose share of "yes" over the mined documents falls outside that interval labels the corpus
    differently from the annotator (e.g. 97% yes where the annotator said yes to 39%).

    Args:
        instruction: the label sub-task's question (quoted in the finding).
        proxy_yes, proxy_n: the proxy's "yes" answers and answers over the mined documents.
        annotator_yes, annotator_n: the annotator's "yes" answers and parsed answers on the sample.
        confidence: coverage of the annotator's interval.

    Returns:
        The finding, or ``None`` when the rate is inside the interval or either count is 0 (nothing
        to compare).

    Raises:
        ValueError: on counts outside ``0 <= yes <= n`` (see :func:`yes_rate_interval`).
    """
    if proxy_n < 0 or not 0 <= proxy_yes <= proxy_n:
        raise ValueError(f"need 0 <= proxy_yes <= proxy_n, got {proxy_yes} of {proxy_n}")
    low, high = yes_rate_interval(annotator_yes, annotator_n, confidence)
    if proxy_n == 0 or annotator_n == 0:
        return None
    rate = proxy_yes / proxy_n
    if low <= rate <= high:
        return None
    direction = "more" if rate > high else "less"
    return (f'label sub-task "{instruction}": the proxy said yes to {rate:.0%} of {proxy_n} mined docs '
            f"({proxy_yes}), the annotator to {annotator_yes / annotator_n:.0%} of {annotator_n} sampled docs "
            f"({confidence:.0%} Wilson interval {low:.0%}-{high:.0%}); the proxy says yes {direction} often than "
            f"the annotator would. To fix: {_REMEDIES}.")


def heldout_collapse(rows: Sequence[AnnotationRow], docs: Mapping[str, Document], get_label: LabelFn,
                     get_span: SpanFn) -> tuple[list[Collapse], list[dict]]:
    """Run the proxy on the held-out annotations, sub-task by sub-task, and look for a collapse.

    Args:
        rows: annotation rows; only ``split == "heldout"`` rows that are :attr:`~AnnotationRow.usable`
            and whose doc is in ``docs`` are used.
        docs: the corpus documents by id.
        get_label, get_span: the proxy's primitives (e.g. ``NTEProxy.get_label``).

    Returns:
        ``(collapses, summary)``: the :class:`Collapse` of every collapsed sub-task, and one dict per
        sub-task (first-seen order) with ``kind``, ``instruction``, ``heldout_docs``, ``annotator``
        and ``proxy``: the "yes" answers (labels) or the spans found (spans) of each.
    """
    groups: dict[tuple[str, str], list[AnnotationRow]] = {}
    for r in rows:
        if r.split == "heldout" and r.usable and r.doc_id in docs:
            groups.setdefault((r.kind, r.instruction), []).append(r)
    collapses: list[Collapse] = []
    summary: list[dict] = []
    for (kind, instruction), group in groups.items():
        texts = [docs[r.doc_id].text for r in group]
        if kind == "label":
            gold: list = [bool(r.label) for r in group]
            pred: list = get_label(texts, instruction)
            counts = (sum(gold), sum(bool(p) for p in pred))
        else:
            gold = [list(r.spans) for r in group]
            pred = get_span(texts, instruction)
            counts = (sum(map(len, gold)), sum(map(len, pred)))
        collapse = collapse_of(kind, instruction, gold, pred)
        if collapse is not None:
            collapses.append(collapse)
        summary.append({"kind": kind, "instruction": instruction, "heldout_docs": len(group),
                        "annotator": counts[0], "proxy": counts[1]})
    return collapses, summary


def count_yes(get_label: LabelFn, counts: dict[str, list[int]]) -> LabelFn:
    """Wrap a ``get_label`` primitive so that it tallies its answers per instruction.

    Args:
        get_label: the primitive to wrap (the proxy's, or a cascade around it).
        counts: filled in place: ``counts[instruction] = [yes, n]`` over every call.

    Returns:
        A primitive with the same signature and answers as ``get_label``.
    """
    def counted(texts: list[str], instruction: str) -> list[bool]:
        answers = get_label(texts, instruction)
        tally = counts.setdefault(instruction, [0, 0])
        tally[0] += sum(bool(a) for a in answers)
        tally[1] += len(answers)
        return answers

    return counted


def annotator_yes_rates(rows: Sequence[AnnotationRow]) -> dict[str, tuple[int, int]]:
    """The annotator's ``(yes, n)`` per label instruction on the random corpus sample.

    Only label rows of origin ``"sample"`` (both splits) with a parsed answer count: the Appendix B
    picks are chosen for their scores, so they do not estimate the corpus' yes-rate.
    """
    out: dict[str, list[int]] = {}
    for r in rows:
        if r.kind == "label" and r.origin == "sample" and r.parse_ok:
            tally = out.setdefault(r.instruction, [0, 0])
            tally[0] += bool(r.label)
            tally[1] += 1
    return {q: (yes, n) for q, (yes, n) in out.items()}
