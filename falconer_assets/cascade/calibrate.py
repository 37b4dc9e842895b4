"""Calibrating a proxy -> LLM cascade so that a quality target holds with probability >= 1 - delta.

A task may ask for a quality target, ``quality: {target: recall | precision, value: 0.9, delta: 0.1,
llm_budget: 0.2}``. For each sub-task of its plan (``get_label`` or ``get_span`` with one
instruction) we look at the proxy's scores on annotated held-out documents, where the LLM annotator
is the oracle, and choose a :class:`Band` of scores: documents whose score falls in the band are
sent to the LLM at mining time, the others keep the proxy's answer. This is the proxy-with-guarantees
idea of SUPG (Kang et al., "Approximate Selection with Guarantees using Proxies", VLDB 2020) and of
BARGAIN (Zeighami et al., 2025: cheap model vs expensive oracle with a precision / recall / accuracy
target), with the thresholds certified by one-sided Clopper-Pearson bounds tested in a fixed
sequence, as in Learn-then-Test (Angelopoulos et al., 2021).

What is controlled, per sub-task (``s`` = the proxy's score of a document, ``y`` = the oracle):

* label, recall target: documents with ``s >= low`` are answered Yes by the proxy (``s >= high``)
  or by the oracle-equivalent LLM (band), so the cascade's recall equals ``R(low) = P(s >= low |
  y)``. Candidates ``t`` (the distinct held-out scores) are tested in ASCENDING order; ``H_t:
  R(t) < value`` is rejected when the Clopper-Pearson lower bound of ``#{positives with s >= t}``
  out of ``#positives`` is ``>= value``; testing stops at the first failure and ``low`` is the
  largest rejected ``t``. ``high`` only affects precision, so it is set as high as ``llm_budget``
  allows (share of held-out documents in ``[low, high)`` at most ``llm_budget``).
* label, precision target: false positives only come from ``s >= high`` (the LLM's Yes answers in
  the band are the oracle's). Candidates are tested in DESCENDING order; ``H_t: precision of {s >=
  t} < value`` is rejected when the lower bound of ``#{positives with s >= t}`` out of ``#{s >=
  t}`` is ``>= value``; ``high`` is the smallest rejected ``t``. ``low`` only affects recall and is
  set as low as ``llm_budget`` allows.
* span (either target): the oracle is the per-document agreement "the proxy's spans equal the
  annotator's". ``H_t: agreement rate among {confidence >= t} < value`` is tested in descending
  order exactly like precision; documents below ``high`` go to the LLM (which agrees with the
  annotator by definition), so the overall per-document agreement is also ``>= value``.
  ``low == high``; the budget cannot shrink the band without breaking the target (a note says so).

Why the guarantee holds. Assume the held-out documents are an i.i.d. (uniformly random) sample of
the distribution the corpus is mined from. Conditional on the number of positives ``P``, the
positives are i.i.d. draws from the positive population, so for a FIXED ``t`` the count
``#{positives with s >= t}`` is Binomial(P, R(t)) and the Clopper-Pearson test has level
``delta``. Fixed-sequence testing rejects hypotheses in a pre-set order and stops at the first
failure; an error needs the FIRST true null of the order to be rejected, an event of probability
``<= delta``, so no multiplicity correction is needed (Learn-then-Test, section on fixed-sequence
testing). The candidates are data points, but for recall this is harmless: ``R(t)`` is
non-increasing, the counts are step functions changing only at data points, so the procedure is
the fixed sequence over the whole continuum ``t`` in [0, 1] and the first null is a fixed point.
For precision / span agreement the sequence starts at the largest score whose selected set holds at
least ``m_min`` documents, ``m_min`` being the fewest documents with which a perfect record can pass
(``delta ** (1 / m) >= value``, 22 documents for value 0.9 and delta 0.1): smaller sets cannot be
rejected whatever their labels, so testing them would end every sequence at once. That start is
chosen from the scores alone, never from the labels; its effect on the level is not covered by the
argument above and is checked empirically (falconer_assets_tests/test_cascade.py measures the met
rate over 200 seeded calibration sets).

What "guaranteed" means. ``Band.guaranteed is True``: a threshold was certified, and with
probability ``>= 1 - delta`` over the draw of the held-out sample, the population recall (label,
recall target), precision (label, precision target) or per-document agreement (span) of the
cascade's final answers, measured against the oracle, is ``>= value``. ``False``: the calibration
data was too small (too few positives, or too few documents at the top) to certify any threshold;
the band then covers the whole constrained side (recall: ``low = 0``, the proxy never says No;
precision: ``high`` above every score, the proxy never says Yes; span: every document goes to the
LLM), so the target holds against the oracle by construction, not by a test, and the budget may be
exceeded for spans.

What it does NOT cover: the annotator versus the truth (the oracle is the LLM annotator; its own
mistakes are outside the guarantee); an LLM at mining time that answers differently from the
annotator (other model, prompts or sampling); documents not drawn from the held-out documents'
distribution (another corpus, or span sub-tasks run only on documents a ``get_label`` kept, when
calibrated on all documents); a proxy retrained after calibration (recalibrate); the realised value
on a finite corpus, which fluctuates around the population value by O(1/sqrt(n)); and the
combination of several sub-tasks in one plan (two labels each with recall 0.9 joined by ``and``
may have recall near 0.81).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from dataclasses import dataclass
from typing import Sequence

import pydantic
from scipy.stats import beta as _beta_dist

from falconer_assets.inputs.tasks import QualityTarget

KINDS = ("label", "span")
"""Sub-task kinds a band can be calibrated for: ``get_label`` and ``get_span``."""

ABOVE_ANY_SCORE = math.nextafter(1.0, math.inf)
"""A ``high`` no score in [0, 1] reaches ("+inf", kept finite so bands stay JSON-safe): the
proxy keeps nothing on its own."""

ROUTES = ("yes", "no", "llm")
"""What :meth:`Band.route` returns: the proxy says Yes / keeps its spans, the proxy says No, or
the document goes to the LLM."""


def as_target(target) -> QualityTarget:
    """``target`` as a :class:`QualityTarget` (the task file's ``quality:`` block,
    :class:`falconer_assets.inputs.tasks.QualityTarget`): itself, or validated from a mapping or from
    another pydantic model with the same fields.

    Raises:
        TypeError: anything else. pydantic.ValidationError (a ``ValueError``): bad or unknown fields.
    """
    if isinstance(target, QualityTarget):
        return target
    if isinstance(target, pydantic.BaseModel):
        return QualityTarget.model_validate(target.model_dump())
    if isinstance(target, dict):
        return QualityTarget.model_validate(target)
    raise TypeError(f"target must be a QualityTarget (or its fields as a dict), got {type(target).__name__}")


def binomial_lower_bound(successes: int, n: int, delta: float) -> float:
    """One-sided ``(1 - delta)`` Clopper-Pearson lower confidence bound of a binomial proportion.

    ``L = Beta.ppf(delta; successes, n - successes + 1)``: for ``k ~ Binomial(n, p)``,
    ``P(L(k) > p) <= delta`` for every ``p``.

    Args:
        successes: successes ``k``, ``0 <= k <= n``.
        n: trials.
        delta: one-sided error level in (0, 1).

    Returns:
        The bound in [0, 1); ``0.0`` when ``successes == 0`` or ``n == 0``.

    Raises:
        ValueError: negative counts, ``successes > n`` or ``delta`` outside (0, 1).

    Source: Clopper & Pearson (1934); as used by SUPG and Learn-then-Test.
    """
    if isinstance(successes, bool) or isinstance(n, bool) or int(successes) != successes or int(n) != n:
        raise ValueError(f"successes and n must be integers, got {successes!r} and {n!r}")
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if successes == 0 or n == 0:
        return 0.0
    return float(_beta_dist.ppf(delta, successes, n - successes + 1))


@dataclass(frozen=True)
class Band:
    """A calibrated routing rule for one sub-task: where the proxy answers and where the LLM does.

    Attributes:
        kind: ``"label"`` or ``"span"``.
        instruction: the sub-task's instruction (the plan's string).
        low: label sub-tasks: scores below are answered No by the proxy. Span: equals ``high``.
        high: scores at or above are answered Yes (label) / keep the proxy's spans (span);
            :data:`ABOVE_ANY_SCORE` when the proxy must decide nothing on that side.
        target: the :class:`QualityTarget` it was calibrated for.
        n_calibration: held-out documents used.
        n_positive: label: oracle positives among them; span: documents where the proxy's spans
            equal the annotator's.
        guaranteed: whether a threshold was certified by the test (module docstring: True = the
            target holds with probability ``>= 1 - delta``; False = too little calibration data,
            the band covers the whole constrained side and the target holds by construction).
        note: one human-readable line on how the band was chosen.

    Raises:
        ValueError: unknown kind, NaN or out-of-order thresholds, ``low != high`` for a span band,
            negative counts. TypeError: ``target`` not convertible by :func:`as_target`.

    Source: the band of SUPG / BARGAIN-style proxy cascades (module docstring).
    """

    kind: str
    instruction: str
    low: float
    high: float
    target: QualityTarget
    n_calibration: int
    n_positive: int
    guaranteed: bool
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown sub-task kind {self.kind!r}; expected 'label' or 'span'")
        object.__setattr__(self, "target", as_target(self.target))
        for name in ("low", "high"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or math.isnan(v):
                raise ValueError(f"band {name} must be a number, got {v!r}")
        if not 0.0 <= self.low <= self.high <= ABOVE_ANY_SCORE:
            raise ValueError(f"need 0 <= low <= high <= 1 (+tiny), got low={self.low}, high={self.high}")
        if self.kind == "span" and self.low != self.high:
            raise ValueError(f"a span band has low == high, got low={self.low}, high={self.high}")
        if not 0 <= self.n_positive <= self.n_calibration:
            raise ValueError(
                f"need 0 <= n_positive <= n_calibration, got {self.n_positive} and {self.n_calibration}"
            )

    def route(self, score: float) -> str:
        """Where a document with this proxy ``score`` goes: ``"yes"``, ``"no"`` or ``"llm"``.

        Label: ``score >= high`` -> ``"yes"`` (the proxy's Yes), ``score < low`` -> ``"no"``,
        otherwise ``"llm"``. Span (``score`` = document-level confidence): ``score >= high`` ->
        ``"yes"`` (keep the proxy's spans), otherwise ``"llm"``. A NaN score goes to the LLM.
        """
        if score >= self.high:
            return "yes"
        if self.kind == "label" and score < self.low:
            return "no"
        return "llm"

    def to_dict(self) -> dict:
        """JSON-safe form (finite floats, plain types); :meth:`from_dict` inverts it exactly."""
        return {
            "kind": self.kind,
            "instruction": self.instruction,
            "low": float(self.low),
            "high": float(self.high),
            "target": self.target.model_dump(),
            "n_calibration": int(self.n_calibration),
            "n_positive": int(self.n_positive),
            "guaranteed": bool(self.guaranteed),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Band":
        """Rebuild a band from :meth:`to_dict`'s output.

        Raises:
            ValueError: a missing key (named) or any invalid value (see the class).
        """
        missing = [k for k in ("kind", "instruction", "low", "high", "target", "n_calibration",
                               "n_positive", "guaranteed") if k not in d]
        if missing:
            raise ValueError(f"band dict lacks {', '.join(missing)}")
        return cls(
            kind=str(d["kind"]),
            instruction=str(d["instruction"]),
            low=float(d["low"]),
            high=float(d["high"]),
            target=QualityTarget.model_validate(d["target"]),
            n_calibration=int(d["n_calibration"]),
            n_positive=int(d["n_positive"]),
            guaranteed=bool(d["guaranteed"]),
            note=str(d.get("note", "")),
        )


# ---------------------------------------------------------------- input checks


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown sub-task kind {kind!r}; expected 'label' or 'span'")


def _check(kind: str, scores: Sequence[float], oracle: Sequence[bool]) -> tuple[list[float], list[bool]]:
    """Validated copies: scores as floats in [0, 1], oracle as bools, equal lengths."""
    _check_kind(kind)
    s, y = list(scores), list(oracle)
    if len(s) != len(y):
        raise ValueError(f"scores and oracle differ in length: {len(s)} scores, {len(y)} oracle answers")
    out_s: list[float] = []
    for i, v in enumerate(s):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"scores[{i}] is not a number: {v!r}") from None
        if math.isnan(f):
            raise ValueError(f"scores[{i}] is NaN")
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"scores[{i}] = {f} is outside [0, 1] (proxy probabilities / confidences)")
        out_s.append(f)
    out_y: list[bool] = []
    for i, v in enumerate(y):
        if isinstance(v, str) or v is None or v not in (0, 1):
            raise ValueError(f"oracle[{i}] must be a bool, got {v!r}")
        out_y.append(bool(v))
    return out_s, out_y


def _min_certifiable(value: float, delta: float) -> int:
    """Fewest trials ``m`` with ``binomial_lower_bound(m, m, delta) >= value`` (binary search)."""
    lo, hi = 1, 1
    while binomial_lower_bound(hi, hi, delta) < value:
        hi *= 2
        if hi > 1 << 40:  # pragma: no cover - value < 1 always ends the search long before
            return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if binomial_lower_bound(mid, mid, delta) >= value:
            hi = mid
        else:
            lo = mid + 1
    return lo


# ---------------------------------------------------------------- threshold searches


def _certify_low(s: list[float], y: list[bool], t: QualityTarget) -> float | None:
    """Label recall: the largest ``low`` certified by the ascending fixed sequence, else None."""
    pos = sorted(si for si, yi in zip(s, y) if yi)
    n_pos = len(pos)
    low = None
    for c in sorted(set(s)):
        kept = n_pos - bisect_left(pos, c)
        if binomial_lower_bound(kept, n_pos, t.delta) >= t.value:
            low = c
        else:
            break
    return low


def _certify_high(s: list[float], y: list[bool], t: QualityTarget) -> float | None:
    """Precision / span agreement: the smallest ``high`` certified by the descending fixed
    sequence, starting at the first threshold that selects at least ``m_min`` documents."""
    m_min = _min_certifiable(t.value, t.delta)
    pairs = sorted(zip(s, y), key=lambda p: -p[0])
    high = None
    m = k = 0
    i = 0
    while i < len(pairs):
        c = pairs[i][0]
        while i < len(pairs) and pairs[i][0] == c:  # every document with score == c joins at once
            m += 1
            k += pairs[i][1]
            i += 1
        if m < m_min:
            continue  # no labelling of so few documents could pass: not part of the sequence
        if binomial_lower_bound(k, m, t.delta) >= t.value:
            high = c
        else:
            break
    return high


def _max_count(n: int, budget: float) -> int:
    return math.floor(budget * n + 1e-9)


def _widest_high(s_sorted: list[float], low: float, budget: float) -> float:
    """The largest ``high >= low`` with ``#{low <= s < high} <= budget * n`` on ``s_sorted``."""
    n = len(s_sorted)
    allowed = _max_count(n, budget)
    below_low = bisect_left(s_sorted, low)
    best = low
    for c in sorted({v for v in s_sorted if v > low}) + [ABOVE_ANY_SCORE]:
        if bisect_left(s_sorted, c) - below_low <= allowed:
            best = c
        else:
            break
    return best


def _lowest_low(s_sorted: list[float], high: float, budget: float) -> float:
    """The smallest ``low <= high`` with ``#{low <= s < high} <= budget * n`` on ``s_sorted``."""
    n = len(s_sorted)
    allowed = _max_count(n, budget)
    below_high = bisect_left(s_sorted, high)
    best = high
    for c in sorted({v for v in s_sorted if v < high}, reverse=True) + [0.0]:
        if below_high - bisect_left(s_sorted, c) <= allowed:
            best = c
        else:
            break
    return best


DECISION_THRESHOLD = 0.5
"""The proxy's own Yes/No threshold on ``P(yes)``: a band never lets the proxy answer against it (a recall
band's ``high`` is at least this, a precision band's ``low`` at most this)."""


def calibrate(
    kind: str,
    instruction: str,
    scores: Sequence[float],
    oracle: Sequence[bool],
    target: QualityTarget,
) -> Band:
    """Choose the band of one sub-task from held-out proxy scores and oracle answers.

    Args:
        kind: ``"label"`` (scores = proxy ``P(yes)``) or ``"span"`` (scores = document-level
            confidence of the proxy's spans, :func:`falconer_assets.cascade.confidence.span_confidence`).
        instruction: the sub-task's instruction, stored in the band.
        scores: one score in [0, 1] per held-out document.
        oracle: per document, the annotator's label (label) or whether the proxy's spans equal the
            annotator's (span).
        target: the quality target.

    Returns:
        A :class:`Band` (procedure and meaning of ``guaranteed``: module docstring).

    Raises:
        ValueError: length mismatch, NaN or out-of-range score, non-boolean oracle answer, unknown
            kind. TypeError: ``target`` is not a :class:`QualityTarget` (or a dict / pydantic model
            of its fields, :func:`as_target`).

    Source: SUPG (Kang et al., VLDB 2020) recall / precision thresholds; BARGAIN (Zeighami et al.,
    2025) proxy / oracle routing; fixed-sequence Clopper-Pearson testing (Learn-then-Test,
    Angelopoulos et al., 2021).
    """
    s, y = _check(kind, scores, oracle)
    target = as_target(target)
    n, n_pos = len(s), sum(y)
    s_sorted = sorted(s)
    v, d = target.value, target.delta
    need = _min_certifiable(v, d)
    if kind == "label" and target.target == "recall":
        low = _certify_low(s, y, target)
        guaranteed = low is not None
        low = 0.0 if low is None else low
        # The budget widens the band upwards, but the proxy never says Yes below its own decision
        # threshold (0.5): without that, an uncertifiable low (0.0) plus a budget-sized band would
        # make the proxy say Yes to most documents, trading all precision for a recall it already has.
        high = max(_widest_high(s_sorted, low, target.llm_budget), max(low, DECISION_THRESHOLD))
        how = (f"low={low:.4g} certified: recall >= {v} with prob >= {1 - d:.4g} (fixed-sequence "
               f"Clopper-Pearson, {n_pos} positives of {n} documents)" if guaranteed else
               f"no low certified ({n_pos} positives of {n} documents; at least {need} needed for "
               f"recall {v} at delta {d}): the proxy never says No, every document below high goes to the LLM")
        note = f"{how}; high={high:.4g} from llm_budget {target.llm_budget}"
    elif kind == "label":
        high = _certify_high(s, y, target)
        guaranteed = high is not None
        high = ABOVE_ANY_SCORE if high is None else high
        low = min(_lowest_low(s_sorted, high, target.llm_budget), min(high, DECISION_THRESHOLD))
        how = (f"high={high:.4g} certified: precision >= {v} with prob >= {1 - d:.4g} (fixed-sequence "
               f"Clopper-Pearson, {n_pos} positives of {n} documents)" if guaranteed else
               f"no high certified ({n_pos} positives of {n} documents): the proxy never says Yes, "
               f"every document at or above low goes to the LLM")
        note = f"{how}; low={low:.4g} from llm_budget {target.llm_budget}"
    else:
        high = _certify_high(s, y, target)
        guaranteed = high is not None
        high = low = ABOVE_ANY_SCORE if high is None else high
        how = (f"high={high:.4g} certified: span agreement >= {v} with prob >= {1 - d:.4g} (fixed-sequence "
               f"Clopper-Pearson, {n_pos} agreeing of {n} documents)" if guaranteed else
               f"no threshold certified ({n_pos} agreeing of {n} documents; at least {need} needed for "
               f"agreement {v} at delta {d}): every document goes to the LLM")
        share = (bisect_left(s_sorted, high) / n) if n else 0.0
        note = how
        if share > target.llm_budget + 1e-12:
            note += f"; band share {share:.3f} exceeds llm_budget {target.llm_budget}: the target takes precedence"
    return Band(kind, instruction, float(low), float(high), target, n, n_pos, guaranteed, note)


# ---------------------------------------------------------------- measuring a band


def band_share(scores: Sequence[float], band: Band) -> float:
    """Share in [0, 1] of ``scores`` that ``band`` routes to the LLM; ``0.0`` for no scores."""
    s = [float(v) for v in scores]
    return sum(band.route(v) == "llm" for v in s) / len(s) if s else 0.0


def _outcomes(s: list[float], y: list[bool], band: Band) -> list[tuple[bool, bool]]:
    """Per document ``(final answer, routed to the LLM)``; label: the final Yes/No; span:
    whether the final spans agree with the annotator's. The LLM answers as the oracle."""
    out = []
    for si, yi in zip(s, y):
        r = band.route(si)
        if r == "llm":
            out.append((yi if band.kind == "label" else True, True))
        elif band.kind == "label":
            out.append((r == "yes", False))
        else:
            out.append((yi, False))
    return out


def _summary(kind: str, y: list[bool], outcomes: list[tuple[bool, bool]]) -> dict:
    n = len(outcomes)
    nan = float("nan")
    llm_share = sum(o[1] for o in outcomes) / n if n else 0.0
    if kind == "span":
        agreement = sum(o[0] for o in outcomes) / n if n else nan
        kept = [o[0] for o in outcomes if not o[1]]
        return {"recall": nan, "precision": nan, "agreement": agreement, "llm_share": llm_share, "n": n,
                "kept_agreement": sum(kept) / len(kept) if kept else nan}
    tp = sum(1 for (a, _), g in zip(outcomes, y) if a and g)
    fp = sum(1 for (a, _), g in zip(outcomes, y) if a and not g)
    fn = sum(1 for (a, _), g in zip(outcomes, y) if not a and g)
    return {
        "recall": tp / (tp + fn) if tp + fn else nan,
        "precision": tp / (tp + fp) if tp + fp else nan,
        "agreement": sum(1 for (a, _), g in zip(outcomes, y) if a == g) / n if n else nan,
        "llm_share": llm_share,
        "n": n,
    }


def achieved(
    kind: str,
    scores: Sequence[float],
    oracle: Sequence[bool],
    band: Band,
    proxy_answers: Sequence[bool] | None = None,
) -> dict:
    """Quality of the cascade's final answers on documents NOT used to calibrate ``band``.

    Documents routed to the LLM count as answered by the oracle. Label: the final answer is the
    band's Yes / No, or the oracle's label in the band. Span: ``oracle`` holds per-document
    agreement booleans (proxy spans == annotator spans); a kept document agrees iff its oracle
    value is True, an LLM-routed one always agrees.

    Args:
        kind: ``"label"`` or ``"span"``; must equal ``band.kind``.
        scores: proxy scores in [0, 1], one per document.
        oracle: oracle labels (label) or agreement booleans (span).
        band: the calibrated band.
        proxy_answers: optional, label only: the proxy's own Yes/No per document (e.g. ``P(yes)
            >= 0.5``); adds the proxy-alone baseline ``proxy_recall``, ``proxy_precision`` and
            ``proxy_agreement``. For spans ``proxy_agreement`` (the mean of ``oracle``) is always
            reported and ``proxy_answers`` must be None.

    For spans the result also holds ``kept_agreement``: the agreement among the documents whose
    proxy spans were kept (the quantity the span guarantee bounds; NaN when none was kept).

    Returns:
        ``{"recall", "precision", "agreement", "llm_share", "n"}`` (+ the baseline keys above):
        shares in [0, 1], NaN when undefined (no oracle positive / no Yes answer; for spans
        recall and precision are always NaN); ``llm_share`` the share routed to the LLM; ``n``
        the number of documents.

    Raises:
        ValueError: as :func:`calibrate`'s input checks; ``kind != band.kind``; ``proxy_answers``
            of the wrong length, or given for spans.
    """
    s, y = _check(kind, scores, oracle)
    if kind != band.kind:
        raise ValueError(f"kind {kind!r} does not match the band's kind {band.kind!r}")
    out = _summary(kind, y, _outcomes(s, y, band))
    if kind == "span":
        if proxy_answers is not None:
            raise ValueError("proxy_answers is for label sub-tasks; span oracle values already are the proxy's agreement")
        out["proxy_agreement"] = sum(y) / len(y) if y else float("nan")
    elif proxy_answers is not None:
        pa = [bool(a) for a in proxy_answers]
        if len(pa) != len(y):
            raise ValueError(f"proxy_answers has {len(pa)} answers for {len(y)} documents")
        base = _summary("label", y, [(a, False) for a in pa])
        out.update({f"proxy_{k}": base[k] for k in ("recall", "precision", "agreement")})
    return out


def target_met(kind: str, result: dict, target: QualityTarget) -> bool:
    """Whether an :func:`achieved`-style ``result`` reaches ``target.value``.

    Label: ``result[target.target]``; span: ``result["agreement"]``. An undefined (NaN) measure
    is met vacuously (no oracle positive to miss / no Yes answer to be wrong).
    """
    _check_kind(kind)
    target = as_target(target)
    x = result["agreement"] if kind == "span" else result[target.target]
    return bool(math.isnan(x) or x >= target.value)


def cross_fitted(
    kind: str,
    instruction: str,
    scores: Sequence[float],
    oracle: Sequence[bool],
    target: QualityTarget,
    folds: int = 2,
    seed: int = 0,
) -> dict:
    """Cross-fitted quality: calibrate on all folds but one, measure on the left-out fold, pool.

    Calibrating and measuring on the same documents would be optimistic; this is what the
    ``eval`` asset reports as "achieved on held-out data". Documents are shuffled with
    ``random.Random(seed)`` and dealt round-robin into ``folds`` folds.

    Returns:
        The pooled :func:`achieved` metrics over all documents plus ``"target"`` (the target's
        measure name), ``"value"``, ``"n"`` (documents), ``"folds"``, ``"guaranteed"`` (every
        fold's band certified) and ``"met"`` (:func:`target_met` on the pooled metrics).

    Raises:
        ValueError: as :func:`calibrate`; ``folds < 2`` or more folds than documents.
    """
    s, y = _check(kind, scores, oracle)
    target = as_target(target)
    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    if folds > len(s):
        raise ValueError(f"{folds} folds need at least {folds} documents, got {len(s)}")
    order = list(range(len(s)))
    random.Random(seed).shuffle(order)
    fold_of = {doc: j % folds for j, doc in enumerate(order)}
    outcomes: list[tuple[bool, bool]] = [(False, False)] * len(s)
    all_guaranteed = True
    for f in range(folds):
        cal = [i for i in range(len(s)) if fold_of[i] != f]
        test = [i for i in range(len(s)) if fold_of[i] == f]
        band = calibrate(kind, instruction, [s[i] for i in cal], [y[i] for i in cal], target)
        all_guaranteed &= band.guaranteed
        for i, o in zip(test, _outcomes([s[i] for i in test], [y[i] for i in test], band)):
            outcomes[i] = o
    out = _summary(kind, y, outcomes)
    out.update({"target": target.target, "value": target.value, "n": len(s), "folds": folds,
                "guaranteed": all_guaranteed})
    out["met"] = target_met(kind, out, target)
    return out


def repetitions(
    kind: str,
    scores: Sequence[float],
    oracle: Sequence[bool],
    target: QualityTarget,
    n_calibration: int,
    reps: int = 20,
    seed: int = 0,
) -> list[dict]:
    """Seeded repetitions of "calibrate on a random ``n_calibration`` documents, measure on the rest".

    Repetition ``r`` draws its calibration set with ``random.Random(seed + r)``. The guarantee
    says the target is met in at least a ``1 - delta`` share of such repetitions (up to the
    finite-sample noise of the measuring set); the benchmark reports the met share of 20.

    Returns:
        One dict per repetition: ``{"seed", "achieved" (the :func:`achieved` dict on the rest),
        "met" (bool), "llm_share", "guaranteed", "low", "high"}``.

    Raises:
        ValueError: as :func:`calibrate`; ``n_calibration`` not in [1, n - 1]; ``reps < 1``.
    """
    s, y = _check(kind, scores, oracle)
    target = as_target(target)
    if not isinstance(n_calibration, int) or not 1 <= n_calibration < len(s):
        raise ValueError(f"n_calibration must be an int in [1, {len(s) - 1}] for {len(s)} documents, got {n_calibration!r}")
    if not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps must be an int >= 1, got {reps!r}")
    out = []
    for r in range(reps):
        cal = set(random.Random(seed + r).sample(range(len(s)), n_calibration))
        rest = [i for i in range(len(s)) if i not in cal]
        cal_idx = sorted(cal)
        band = calibrate(kind, f"repetition {seed + r}", [s[i] for i in cal_idx], [y[i] for i in cal_idx], target)
        res = _summary(kind, [y[i] for i in rest], _outcomes([s[i] for i in rest], [y[i] for i in rest], band))
        out.append({"seed": seed + r, "achieved": res, "met": target_met(kind, res, target),
                    "llm_share": res["llm_share"], "guaranteed": band.guaranteed,
                    "low": band.low, "high": band.high})
    return out
