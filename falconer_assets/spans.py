"""The span type shared by every stage: a character-offset slice of one document's text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Span:
    """A half-open character range ``[start, end)`` of a document's text.

    Attributes:
        start: offset of the first character, 0-based, in Python ``str`` code points.
        end: offset one past the last character; ``text[start:end] == self.text``.
        text: the covered substring, kept so plans can read ``span.text``.
        score: confidence in [0, 1] (proxy probability; 1.0 for LLM/human annotations).

    Raises:
        ValueError: if ``start < 0``, ``end <= start`` or ``len(text) != end - start``.
    """

    start: int
    end: int
    text: str
    score: float = 1.0

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"bad span offsets [{self.start}, {self.end})")
        if len(self.text) != self.end - self.start:
            raise ValueError(
                f"span text {self.text!r} has length {len(self.text)}, offsets say {self.end - self.start}"
            )

    @classmethod
    def of(cls, doc: str, start: int, end: int, score: float = 1.0) -> "Span":
        """Build the span ``doc[start:end]``; raises ValueError if out of ``doc``'s bounds."""
        if end > len(doc):
            raise ValueError(f"span end {end} is past the text length {len(doc)}")
        return cls(start, end, doc[start:end], score)

    def to_dict(self) -> dict:
        """JSON-ready form ``{"start", "end", "text", "score"}``."""
        return {"start": self.start, "end": self.end, "text": self.text, "score": self.score}

    @classmethod
    def from_dict(cls, d: dict) -> "Span":
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["start"]), int(d["end"]), str(d["text"]), float(d.get("score", 1.0)))
