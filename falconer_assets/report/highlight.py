"""Cut a document into segments for in-place highlighting of (possibly overlapping) spans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Mark:
    """One span to highlight: character offsets ``[start, end)`` into the text, its field and score."""

    start: int
    end: int
    field: str
    score: float


@dataclass(frozen=True)
class Segment:
    """A run of text covered by the same marks (``marks`` empty: plain text)."""

    text: str
    marks: tuple[Mark, ...]


def segments(text: str, marks: Sequence[Mark]) -> list[Segment]:
    """Split ``text`` at every mark boundary; each segment lists the marks covering it.

    Overlapping marks (two fields on the same words, or two spans of one field) give segments
    covered by several marks, so nothing is dropped and no HTML tags need to nest.
    ``"".join(s.text for s in segments(text, marks)) == text``.

    Args:
        text: the document text.
        marks: spans with character offsets into ``text``.

    Returns:
        Segments in text order, non-empty, covering the whole text.

    Raises:
        ValueError: a mark outside ``[0, len(text)]`` or with ``start >= end`` (offsets that do
            not belong to this text).
    """
    for m in marks:
        if not (0 <= m.start < m.end <= len(text)):
            raise ValueError(f"mark {m.field!r} [{m.start}, {m.end}) does not fit a text of {len(text)} characters")
    cuts = sorted({0, len(text), *(m.start for m in marks), *(m.end for m in marks)})
    out: list[Segment] = []
    for a, b in zip(cuts, cuts[1:]):
        if a == b:
            continue
        covering = tuple(m for m in marks if m.start <= a and b <= m.end)
        out.append(Segment(text[a:b], covering))
    return out
