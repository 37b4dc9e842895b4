"""Proxy-vs-annotator agreement per sub-task on the held-out slice (paper section 4.2).

Label sub-tasks get precision/recall/F1 of the ``True`` class; span sub-tasks get exact-match
span P/R/F1 (seqeval on word-level BIO) and word-level P/R/F1, as in
:mod:`falconer_assets.core.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from falconer_assets.core.metrics import label_prf, span_prf, word_prf
from falconer_assets.core.spans import Span


@dataclass(frozen=True)
class SubtaskScore:
    """Scores of one sub-task: ``kind``, ``instruction``, ``n`` texts and the metric dict."""

    kind: str
    instruction: str
    n: int
    metrics: dict[str, float]


def score_label_subtask(instruction: str, gold: Sequence[bool], pred: Sequence[bool]) -> SubtaskScore:
    """Label P/R/F1 (positive class ``True``) of proxy ``pred`` against annotator ``gold``."""
    m = label_prf(gold, pred)
    return SubtaskScore("label", instruction, len(gold), {
        "label_precision": m["precision"], "label_recall": m["recall"], "label_f1": m["f1"],
        "gold_positive": float(sum(bool(g) for g in gold)),
        "accuracy": sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0,
    })


def score_span_subtask(
    instruction: str, texts: Sequence[str], gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]]
) -> SubtaskScore:
    """Span (seqeval exact) and word-level P/R/F1 of proxy ``pred`` against annotator ``gold``."""
    s = span_prf(texts, gold, pred)
    w = word_prf(texts, gold, pred)
    return SubtaskScore("span", instruction, len(texts), {
        "span_precision": s["precision"], "span_recall": s["recall"], "span_f1": s["f1"],
        "word_precision": w["precision"], "word_recall": w["recall"], "word_f1": w["f1"],
        "gold_spans": float(s.get("n_gold", sum(len(g) for g in gold))),
        "pred_spans": float(s.get("n_pred", sum(len(p) for p in pred))),
    })
