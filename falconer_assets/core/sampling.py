"""Seeded corpus sampling for the generator (paper 3.5: "around five percent of the corpus")."""

from __future__ import annotations

import random
from collections.abc import Sequence


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
