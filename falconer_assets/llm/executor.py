"""The LLM as executor of the two primitives: the annotator (paper 3.5) and the cost baseline.

``LLMPrimitives`` answers ``get_label``/``get_span`` one chat call per text (several in flight
when given a concurrent ``chat_many``) through any chat callable returning a :class:`~falconer_assets.llm.client.ChatResult`-like object
(``text``, ``latency_s``, ``prompt_tokens``, ``completion_tokens``, ``cached``), using the
prompts and answer alignment of :mod:`falconer_assets.llm.prompts`. It records every answer
as an :class:`Annotation` so callers can store them and count dropped answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from falconer_assets.llm.prompts import (
    align_answers,
    label_messages,
    parse_label,
    parse_span_answers,
    span_messages,
)
from falconer_assets.spans import Span


@dataclass
class Annotation:
    """One LLM answer to one sub-task on one text.

    Attributes:
        kind: ``"label"`` or ``"span"``.
        instruction: the sub-task's instruction string (from the plan).
        text: the document text.
        label: the Yes/No decision (label sub-tasks; ``False`` when unparseable).
        spans: answers aligned to character offsets (span sub-tasks).
        dropped: answers the LLM gave that are not in the text (not aligned, dropped).
        parse_ok: ``False`` when a label reply was neither Yes nor No.
        raw: the LLM reply text.
        latency_s: wall seconds of the original LLM call (also when served from cache).
        tokens: prompt + completion tokens of the call.
    """

    kind: str
    instruction: str
    text: str
    label: bool | None = None
    spans: list[Span] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    parse_ok: bool = True
    raw: str = ""
    latency_s: float = 0.0
    tokens: int = 0
    cached: bool = False


class LLMPrimitives:
    """``get_label``/``get_span`` implemented by an LLM, one chat call per text.

    Args:
        chat: ``chat(messages: list[dict]) -> result`` with attributes ``text``, ``latency_s``,
            ``prompt_tokens``, ``completion_tokens`` and ``cached``.
        chat_many: optional ``chat_many(batch: list[list[dict]]) -> [result, ...]`` (same order),
            e.g. :meth:`~falconer_assets.llm.client.ChatLLM.chat_many`, which keeps several requests
            in flight; without it the texts of a call are asked one after another through ``chat``.

    Attributes:
        annotations: every answer produced so far, in call order.
    """

    def __init__(self, chat: Callable[[list[dict]], Any],
                 chat_many: Callable[[list[list[dict]]], list[Any]] | None = None):
        self._chat = chat
        self._chat_many = chat_many or (lambda batch: [chat(m) for m in batch])
        self.annotations: list[Annotation] = []

    def annotate(self, kind: str, text: str, instruction: str) -> Annotation:
        """Ask the LLM one sub-task on one text; raises ValueError for an unknown ``kind``."""
        return self.annotate_many(kind, [text], instruction)[0]

    def annotate_many(self, kind: str, texts: list[str], instruction: str) -> list[Annotation]:
        """Ask the LLM one sub-task on each of ``texts`` (through ``chat_many``: concurrently when it is
        concurrent); the answers keep the texts' order.

        Raises:
            ValueError: an unknown ``kind`` (before any call).
        """
        if kind == "label":
            prompts = [label_messages(t, instruction) for t in texts]
        elif kind == "span":
            prompts = [span_messages(t, instruction) for t in texts]
        else:
            raise ValueError(f"unknown sub-task kind {kind!r}; expected 'label' or 'span'")
        out = []
        for text, res in zip(texts, self._chat_many(prompts) if prompts else []):
            if kind == "label":
                parsed = parse_label(res.text)
                ann = Annotation(kind, instruction, text, label=bool(parsed), parse_ok=parsed is not None)
            else:
                spans, dropped = align_answers(text, parse_span_answers(res.text))
                ann = Annotation(kind, instruction, text, spans=spans, dropped=dropped)
            ann.raw = res.text
            ann.latency_s = float(res.latency_s)
            ann.tokens = int(res.prompt_tokens or 0) + int(res.completion_tokens or 0)
            ann.cached = bool(res.cached)
            out.append(ann)
        self.annotations.extend(out)
        return out

    def get_label(self, texts: list[str], instruction: str) -> list[bool]:
        """Plan primitive: one Yes/No decision per text (unparseable replies count as No)."""
        return [bool(a.label) for a in self.annotate_many("label", list(texts), instruction)]

    def get_span(self, texts: list[str], instruction: str) -> list[list[Span]]:
        """Plan primitive: the aligned answer spans per text."""
        return [a.spans for a in self.annotate_many("span", list(texts), instruction)]

    @property
    def llm_seconds(self) -> float:
        """Sum of the original wall time of every call made (seconds)."""
        return sum(a.latency_s for a in self.annotations)

    @property
    def tokens(self) -> int:
        """Total prompt + completion tokens of every call made."""
        return sum(a.tokens for a in self.annotations)
