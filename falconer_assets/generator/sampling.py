"""Seeded corpus sampling for the generator (paper 3.5: "around five percent of the corpus"),
and the extra, score-guided sample for classification sub-tasks (paper Appendix B)."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Collection, Iterable, Mapping, Sequence


def sample_size(n_docs: int, fraction: float, min_docs: int, max_docs: int) -> int:
    """``round(fraction * n_docs)`` clamped to ``[min_docs, max_docs]`` and to ``n_docs``.

    Raises:
        ValueError: if ``fraction`` is not in (0, 1] or ``min_docs > max_docs``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if min_docs > max_docs:
        raise ValueError(f"min_docs {min_docs} > max_docs {max_docs}")
    return min(n_docs, max(min_docs, min(max_docs, round(fraction * n_docs))))


def sample_with_split(
    ids: Sequence[str], n: int, heldout_fraction: float, seed: int
) -> list[tuple[str, str]]:
    """Draw ``n`` ids without replacement and assign each to ``"train"`` or ``"heldout"``.

    The draw is independent of input order (ids are sorted first) and reproducible for a seed.
    At least one id goes to each split when ``n >= 2`` and ``0 < heldout_fraction < 1``.

    Returns:
        ``[(id, split), ...]`` sorted by id.

    Raises:
        ValueError: if ``n`` exceeds the number of ids or ``heldout_fraction`` is outside [0, 1).
    """
    if n > len(ids):
        raise ValueError(f"cannot sample {n} of {len(ids)} documents")
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    rng = random.Random(seed)
    chosen = rng.sample(sorted(ids), n)
    n_heldout = round(heldout_fraction * n)
    if n >= 2 and heldout_fraction > 0:
        n_heldout = min(max(n_heldout, 1), n - 1)
    split = {doc_id: ("heldout" if i < n_heldout else "train") for i, doc_id in enumerate(chosen)}
    return sorted(split.items())


# --------------------------------------------------------------------------- Appendix B heuristic
#
# Paper, Appendix B ("Generating Fine-tuning Samples"): "We leverage the metamodel's inherent
# pretraining knowledge and adopt a heuristic approach to obtain a relatively high-quality
# fine-tuning dataset. For classification tasks, the generation of fine-tuning samples is
# illustrated in Algorithm 1, whereas for extraction tasks, we directly employ random sampling."
# Algorithm 1 itself is a figure not reproduced in the text we have; the functions below are
# this project's reading of it: score unlabelled documents zero-shot with the proxy base, then
# spend an extra annotation budget on a random slice plus the most confident likely positives
# and likely negatives (positives are usually the rare class, so they get most of it).

LABEL_REASONS: tuple[str, ...] = ("random", "likely_positive", "likely_negative")
"""The ``reason`` values :func:`select_label_candidates` returns, in its output order."""


def extra_budget(n_train: int, ratio: float) -> int:
    """Extra label documents for a sample with ``n_train`` training docs: ``round(ratio * n_train)``.

    Raises:
        ValueError: if ``n_train < 0`` or ``ratio`` is negative or not finite.
    """
    if n_train < 0:
        raise ValueError(f"n_train must be >= 0, got {n_train}")
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"label_extra_ratio must be a finite number >= 0, got {ratio}")
    return round(ratio * n_train)


def candidate_pool(ids: Iterable[str], exclude: Collection[str], max_size: int, seed: int | str) -> list[str]:
    """A seeded random subset of at most ``max_size`` ids that are not in ``exclude``.

    Used to cap how many unlabelled documents the proxy base scores: ``exclude`` holds every
    id already in the corpus sample (train and held-out), so no pool id is ever a held-out id.
    Independent of input order (ids are de-duplicated and sorted first) and reproducible for
    a seed; the seed is namespaced so the pool is not correlated with
    :func:`sample_with_split` called with the same seed.

    Returns:
        The chosen ids, sorted.

    Raises:
        ValueError: if ``max_size < 0``.
    """
    if max_size < 0:
        raise ValueError(f"candidate_pool must be >= 0, got {max_size}")
    excluded = set(exclude)
    rest = sorted({i for i in ids if i not in excluded})
    if len(rest) <= max_size:
        return rest
    return sorted(random.Random(f"falconer/candidate_pool/{seed}").sample(rest, max_size))


def check_label_shares(random_share: float, positive_share: float) -> None:
    """Raise ``ValueError`` unless both shares are finite numbers in [0, 1]."""
    for name, value in (("random_share", random_share), ("positive_share", positive_share)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def select_label_candidates(
    scores: Mapping[str, float],
    budget: int,
    random_share: float = 0.25,
    positive_share: float = 0.75,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """Pick up to ``budget`` documents for one classification sub-task (paper Appendix B).

    ``n = min(budget, len(scores))`` documents are chosen, disjoint:

    1. ``n_random = round(random_share * n)`` drawn uniformly at random from all of ``scores``
       (an unbiased slice: the LLM's positive rate on them is the baseline);
    2. of the remaining ``n - n_random``, ``round(positive_share * (n - n_random))`` with the
       highest scores among the documents not drawn in 1 (reason ``"likely_positive"``);
    3. the rest with the lowest scores among those (reason ``"likely_negative"``).

    Ties in score are broken by a seeded shuffle of the ids, never by the mapping's order or
    the ids' spelling, so the result depends only on ``(scores, budget, shares, seed)``.

    Args:
        scores: ``{doc_id: score}``, a zero-shot ``P(Yes)`` (or any real-valued score where
            higher means "more likely positive") for each candidate document.
        budget: how many documents to pick at most; ``0`` gives ``[]``.
        random_share: fraction of the picks drawn at random, in [0, 1].
        positive_share: fraction of the non-random picks taken from the top of the ranking,
            in [0, 1]; the rest come from the bottom.
        seed: seed of the random draw and of the tie-breaking.

    Returns:
        ``[(doc_id, reason), ...]`` with reason in :data:`LABEL_REASONS`: first the
        ``"random"`` picks (sorted by id), then ``"likely_positive"`` (highest score first),
        then ``"likely_negative"`` (lowest score first). Every id appears at most once.

    Raises:
        ValueError: if ``budget < 0``, a share is outside [0, 1], or a score is NaN or not a
            number.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"budget must be an int >= 0, got {budget!r}")
    check_label_shares(random_share, positive_share)
    for doc_id, s in scores.items():
        if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s):
            raise ValueError(f"score of {doc_id!r} must be a number, got {s!r}")
    n = min(budget, len(scores))
    if n == 0:
        return []
    rng = random.Random(f"falconer/select_label_candidates/{seed}")
    ids = sorted(scores)
    n_random = round(random_share * n)
    randoms = set(rng.sample(ids, n_random))
    rest = [i for i in ids if i not in randoms]
    rng.shuffle(rest)  # seeded tie-break; the stable sort below keeps it among equal scores
    ranked = sorted(rest, key=lambda i: scores[i], reverse=True)
    n_pos = round(positive_share * (n - n_random))
    n_neg = n - n_random - n_pos
    positives = ranked[:n_pos]
    negatives = ranked[len(ranked) - n_neg:][::-1] if n_neg else []
    return ([(i, "random") for i in sorted(randoms)]
            + [(i, "likely_positive") for i in positives]
            + [(i, "likely_negative") for i in negatives])


# --------------------------------------------------------------------------- held-out enlargement
#
# Issue 10, item 2: a random held-out split of ~25 docs holds 1-7 positives of a rare label, so its
# F1 moves by 0.1-0.3 per document. The held-out split is enlarged with a second stratum: extra docs
# drawn uniformly at random from the docs the proxy base scores highest (zero-shot), where the
# positives are, and every held-out doc is weighted by its stratum so that the weighted counts
# estimate the corpus' counts without bias (stratified sampling; Cochran, "Sampling Techniques",
# 3rd ed., ch. 5, and post-stratification, 5A.9). The extra docs come from a pool disjoint from the
# training pool, so no held-out doc is ever a training pick.

HELDOUT_STRATUM = "heldout_stratum"
"""``origin`` of an extra held-out doc drawn from the high-score stratum."""


@dataclasses.dataclass(frozen=True)
class HeldoutStratum:
    """The high-score stratum of the held-out split and the weights that keep the estimate unbiased.

    The population (the corpus outside the training sample, represented by a seeded random pool of it)
    is split at ``threshold`` of a zero-shot score into a high stratum (share ``p_high`` of the pool)
    and a low one. The random held-out docs fall in either; the ``extra`` docs are a uniform draw from
    the pool's high stratum. Within a stratum every held-out doc is a uniform draw from it, so weighting
    each by ``stratum share / held-out docs in the stratum`` (scaled so the weights sum to the number
    of random held-out docs) gives weighted counts that estimate the population's.

    Attributes:
        threshold: the score at and above which a doc is in the high stratum.
        p_high: share of the pool in the high stratum, in (0, 1).
        pool_size: docs of the held-out pool that were scored.
        extra: the extra held-out doc ids (sorted), drawn from the pool's high stratum.
        random_high: the random held-out doc ids in the high stratum (sorted).
        random_low: the number of random held-out docs in the low stratum.
        weight_high, weight_low: the weight of a held-out doc in the high or the low stratum.
    """

    threshold: float
    p_high: float
    pool_size: int
    extra: tuple[str, ...]
    random_high: tuple[str, ...]
    random_low: int
    weight_high: float
    weight_low: float

    def weight(self, doc_id: str) -> float:
        """The weight of held-out doc ``doc_id`` (an extra doc, or a random one in the high stratum, gets
        ``weight_high``; any other ``weight_low``)."""
        return self.weight_high if doc_id in self.extra or doc_id in self.random_high else self.weight_low

    def to_dict(self) -> dict:
        """JSON-ready fields (for the stratum cache and the asset metadata)."""
        return {**dataclasses.asdict(self), "extra": list(self.extra), "random_high": list(self.random_high)}

    @classmethod
    def from_dict(cls, d: Mapping) -> HeldoutStratum:
        """The inverse of :meth:`to_dict`."""
        return cls(**{**d, "extra": tuple(d["extra"]), "random_high": tuple(d["random_high"])})


def stratum_weights(random_high: int, random_low: int, extra: int, p_high: float) -> tuple[float, float]:
    """Weights ``(high, low)`` of held-out docs by stratum: ``share * n_random / docs in the stratum``.

    Args:
        random_high, random_low: random held-out docs in each stratum (``random_low >= 1``).
        extra: extra held-out docs, all in the high stratum.
        p_high: the high stratum's share of the population, in (0, 1).

    Returns:
        The two weights; they sum to ``random_high + random_low`` over the held-out docs, so with no
        extra doc and ``p_high`` equal to the random docs' share both are 1.

    Raises:
        ValueError: counts below 0, no held-out doc in a stratum, or ``p_high`` outside (0, 1).
    """
    if min(random_high, random_low, extra) < 0:
        raise ValueError(f"counts must be >= 0, got {random_high}, {random_low}, {extra}")
    if not 0 < p_high < 1:
        raise ValueError(f"p_high must be in (0, 1), got {p_high}")
    n_high, n_random = random_high + extra, random_high + random_low
    if n_high == 0 or random_low == 0:
        raise ValueError(f"each stratum needs a held-out doc (high {n_high}, low {random_low})")
    return p_high * n_random / n_high, (1 - p_high) * n_random / random_low


def extra_heldout_docs(positives_now: int, target: int, yes_rate_high: float, max_extra: int) -> int:
    """How many high-stratum docs to add so the held-out split holds about ``target`` positives.

    Args:
        positives_now: the annotator's positives among the random held-out docs (the fewest over
            the label sub-tasks).
        target: the positives to aim at (0 disables the enlargement).
        yes_rate_high: the expected yes-rate in the high stratum (floored at 0.1).
        max_extra: the cap (each extra doc costs one LLM call per sub-task).

    Returns:
        ``min(max_extra, ceil((target - positives_now) / yes_rate_high))``, or 0 when the target is
        already met.

    Raises:
        ValueError: a negative count or a rate that is not a finite number in [0, 1].
    """
    if min(positives_now, target, max_extra) < 0:
        raise ValueError(f"counts must be >= 0, got {positives_now}, {target}, {max_extra}")
    if not (math.isfinite(yes_rate_high) and 0 <= yes_rate_high <= 1):
        raise ValueError(f"yes_rate_high must be in [0, 1], got {yes_rate_high}")
    missing = target - positives_now
    return 0 if missing <= 0 else min(max_extra, math.ceil(missing / max(yes_rate_high, 0.1)))


def heldout_stratum(pool_scores: Mapping[str, float], random_scores: Mapping[str, float], n_extra: int,
                    top_share: float, seed: int) -> HeldoutStratum | None:
    """Split the held-out pool at its top ``top_share`` and draw ``n_extra`` docs from the top.

    Args:
        pool_scores: ``{doc_id: score}`` of the held-out pool (a seeded random subset of the corpus
            outside the sample and outside the training pool; higher = more likely positive).
        random_scores: ``{doc_id: score}`` of the random held-out docs, same scorer.
        n_extra: extra docs to draw (at most the pool's high stratum).
        top_share: the high stratum's share of the pool, in (0, 1).
        seed: seed of the draw and of the tie-breaking.

    Returns:
        The :class:`HeldoutStratum`, or ``None`` when there is nothing to add or it cannot be done
        without bias (``n_extra == 0``, an empty pool, a pool whose scores are all equal, or no random
        held-out doc in the low stratum).

    Raises:
        ValueError: ``top_share`` outside (0, 1), ``n_extra < 0`` or a score that is not a number.
    """
    if not 0 < top_share < 1:
        raise ValueError(f"top_share must be in (0, 1), got {top_share}")
    if n_extra < 0:
        raise ValueError(f"n_extra must be >= 0, got {n_extra}")
    for doc_id, s in {**pool_scores, **random_scores}.items():
        if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s):
            raise ValueError(f"score of {doc_id!r} must be a number, got {s!r}")
    if n_extra == 0 or not pool_scores:
        return None
    ranked = sorted(pool_scores.values(), reverse=True)
    threshold = ranked[max(0, math.ceil(top_share * len(ranked)) - 1)]
    high = sorted(i for i, s in pool_scores.items() if s >= threshold)
    p_high = len(high) / len(pool_scores)
    random_high = sorted(i for i, s in random_scores.items() if s >= threshold)
    random_low = len(random_scores) - len(random_high)
    if p_high >= 1 or random_low == 0:
        return None
    extra = sorted(random.Random(f"falconer/heldout_stratum/{seed}").sample(high, min(n_extra, len(high))))
    w_high, w_low = stratum_weights(len(random_high), random_low, len(extra), p_high)
    return HeldoutStratum(threshold, p_high, len(pool_scores), tuple(extra), tuple(random_high), random_low,
                          w_high, w_low)
