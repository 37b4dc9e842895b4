"""The cascade executor: ``get_label``/``get_span`` answered by the proxy, with the uncertain band sent to the LLM.

Plans call the two primitives on batches of documents (:func:`falconer_assets.mining.mine_documents`).
:class:`CascadePrimitives` has the same signatures: for each call it scores the texts with the proxy,
routes them through the sub-task's calibrated :class:`~falconer_assets.cascade.calibrate.Band`, and
sends the texts in the band to the LLM executor in one batched call (SUPG / BARGAIN-style proxy ->
oracle cascade; guarantees in :mod:`falconer_assets.cascade.calibrate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from falconer_assets.cascade.calibrate import Band
from falconer_assets.cascade.confidence import span_confidence
from falconer_assets.spans import Span


class CascadePrimitives:
    """``get_label``/``get_span`` by the proxy, with each calibrated sub-task's band answered by the LLM.

    Args:
        proxy: an :class:`~falconer_assets.proxy.model.NTEProxy`-like object: ``get_label``,
            ``get_label_scores``, ``get_span`` and ``get_span_with_confidence``, each taking
            ``(texts, instruction, batch_size=...)``.
        llm: an :class:`~falconer_assets.llm.executor.LLMPrimitives`-like object: ``get_label(texts,
            instruction) -> list[bool]`` and ``get_span(texts, instruction) -> list[list[Span]]``.
        bands: calibrated bands keyed by ``(kind, instruction)``; a sub-task without one is answered
            by the proxy alone (``get_label`` / ``get_span``, no LLM call).
        batch_size: the proxy's batch size.

    Attributes:
        routed_texts: every text any call sent to the LLM (mining marks rows produced with LLM help).
        stats: per ``(kind, instruction)``: ``{"docs", "llm", "proxy_yes", "proxy_no"}`` document
            answers so far; for spans ``proxy_yes`` counts documents whose proxy spans were kept and
            ``proxy_no`` stays 0.

    Raises:
        ValueError: a band whose key does not match its ``(kind, instruction)``, ``batch_size < 1``.

    Source: the proxy -> oracle cascade of SUPG (Kang et al., VLDB 2020) and BARGAIN (Zeighami et
    al., 2025) applied to Falconer's two primitives (paper 3.4).
    """

    def __init__(self, proxy, llm, bands: Mapping[tuple[str, str], Band], batch_size: int = 32):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        for key, band in bands.items():
            if not isinstance(band, Band):
                raise ValueError(f"bands[{key!r}] is a {type(band).__name__}, not a Band")
            if tuple(key) != (band.kind, band.instruction):
                raise ValueError(f"bands key {key!r} does not match the band's ({band.kind!r}, {band.instruction!r})")
        self.proxy = proxy
        self.llm = llm
        self.bands: dict[tuple[str, str], Band] = dict(bands)
        self.batch_size = batch_size
        self.routed_texts: set[str] = set()
        self.stats: dict[tuple[str, str], dict[str, int]] = {}

    def _count(self, kind: str, instruction: str, docs: int, llm: int, yes: int, no: int) -> None:
        st = self.stats.setdefault((kind, instruction), {"docs": 0, "llm": 0, "proxy_yes": 0, "proxy_no": 0})
        st["docs"] += docs
        st["llm"] += llm
        st["proxy_yes"] += yes
        st["proxy_no"] += no

    def _ask_llm(self, method, texts: list[str], idx: list[int], instruction: str) -> list:
        """One batched LLM call on ``texts[i] for i in idx``; checks the answer count."""
        if not idx:
            return []
        asked = [texts[i] for i in idx]
        answers = list(method(asked, instruction))
        if len(answers) != len(asked):
            raise ValueError(f"the LLM answered {len(answers)} of {len(asked)} texts for {instruction!r}")
        self.routed_texts.update(asked)
        return answers

    def get_label(self, texts: Sequence[str], instruction: str) -> list[bool]:
        """Plan primitive: one Yes/No per text, same order.

        With a band: the proxy's ``P(yes)`` routes each text (``>= high`` Yes, ``< low`` No, else
        the LLM, all LLM texts in one call). Without: the proxy's ``get_label``.
        """
        texts = list(texts)
        band = self.bands.get(("label", instruction))
        if band is None:
            answers = [bool(a) for a in self.proxy.get_label(texts, instruction, batch_size=self.batch_size)]
            self._count("label", instruction, len(texts), 0, sum(answers), len(answers) - sum(answers))
            return answers
        scores = self.proxy.get_label_scores(texts, instruction, batch_size=self.batch_size)
        routes = [band.route(float(s)) for s in scores]
        idx = [i for i, r in enumerate(routes) if r == "llm"]
        out = [r == "yes" for r in routes]
        for i, a in zip(idx, self._ask_llm(self.llm.get_label, texts, idx, instruction)):
            out[i] = bool(a)
        self._count("label", instruction, len(texts), len(idx), routes.count("yes"), routes.count("no"))
        return out

    def get_span(self, texts: Sequence[str], instruction: str) -> list[list[Span]]:
        """Plan primitive: the answer spans per text, same order.

        With a band: the proxy's document-level confidence (:func:`span_confidence`) routes each
        text (``>= high`` keeps the proxy's spans, else the LLM, all LLM texts in one call).
        Without: the proxy's ``get_span``.
        """
        texts = list(texts)
        band = self.bands.get(("span", instruction))
        if band is None:
            out = [list(s) for s in self.proxy.get_span(texts, instruction, batch_size=self.batch_size)]
            self._count("span", instruction, len(texts), 0, len(texts), 0)
            return out
        spans, conf = span_confidence(self.proxy, texts, instruction, self.batch_size)
        routes = [band.route(c) for c in conf]
        idx = [i for i, r in enumerate(routes) if r == "llm"]
        for i, a in zip(idx, self._ask_llm(self.llm.get_span, texts, idx, instruction)):
            spans[i] = list(a)
        self._count("span", instruction, len(texts), len(idx), len(texts) - len(idx), 0)
        return spans

    @property
    def llm_share(self) -> float:
        """LLM-routed document answers / all document answers so far, in [0, 1]; 0.0 before any."""
        docs = sum(st["docs"] for st in self.stats.values())
        return sum(st["llm"] for st in self.stats.values()) / docs if docs else 0.0
