"""Document-level confidence of the proxy's ``get_span`` answer, the score span bands are calibrated on.

The NTE proxy tags every word of the text O/B/I (:mod:`falconer_assets.proxy.nte`); its spans are
exactly right only if every word's tag is. The confidence of a document is therefore the smallest,
over the text's words (the first sub-token of each, the token :func:`~falconer_assets.proxy.nte.decode_spans`
reads), of the probability of the tag the decoder chose: the least sure word decides. The numbers
come from :meth:`falconer_assets.proxy.model.NTEProxy.get_span_with_confidence`, which runs the model
once for both the spans and the confidences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from falconer_assets.spans import Span


def span_confidence(proxy, texts: Sequence[str], instruction: str, batch_size: int = 32) -> tuple[list[list[Span]], list[float]]:
    """The proxy's spans and one document-level confidence per text.

    Args:
        proxy: an :class:`~falconer_assets.proxy.model.NTEProxy`, or any object with
            ``get_span_with_confidence(texts, instruction, batch_size=...) -> (spans, confidences)``.
        texts: the documents.
        instruction: the span sub-task's instruction.
        batch_size: texts per forward pass.

    Returns:
        ``(spans, confidences)``: ``spans[i]`` is the proxy's ``get_span`` answer for ``texts[i]``
        (character offsets into it); ``confidences[i]`` in [0, 1] is the minimum over the text's
        words of the probability of the decoded tag (1.0 for a text with no word); a text longer than
        the proxy's window is read in overlapping windows and gets the minimum over them.

    Raises:
        TypeError: ``proxy`` has no ``get_span_with_confidence``.
        ValueError: the proxy returned the wrong number of answers or a confidence outside [0, 1];
            the proxy's own errors (blank instruction, ``batch_size < 1``) pass through.

    Source: per-token tag probabilities of the NTE tagger (Falconer paper 3.3; Cuckoo); the
    minimum-over-tokens sequence confidence is the usual "least confident token" score.
    """
    texts = list(texts)
    method = getattr(proxy, "get_span_with_confidence", None)
    if method is None:
        raise TypeError(f"{type(proxy).__name__} has no get_span_with_confidence(texts, instruction, batch_size)")
    spans, conf = method(texts, instruction, batch_size=batch_size)
    spans, conf = [list(s) for s in spans], [float(c) for c in conf]
    if len(spans) != len(texts) or len(conf) != len(texts):
        raise ValueError(f"the proxy answered {len(spans)} span lists and {len(conf)} confidences for {len(texts)} texts")
    for i, c in enumerate(conf):
        if math.isnan(c) or not 0.0 <= c <= 1.0:
            raise ValueError(f"confidence {c!r} of text {i} is outside [0, 1]")
    return spans, conf
