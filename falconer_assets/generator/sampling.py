"""Seeded corpus sampling for the generator (paper 3.5: "around five percent of the corpus"),
and the extra, score-guided sample for classification sub-tasks (paper Appendix B)."""

from __future__ import annotations

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


def candidate_pool(ids: Iterable[str], exclude: Collection[str], max_size: int, seed: int) -> list[str]:
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
