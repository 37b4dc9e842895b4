"""Agreement metrics between a proxy model's outputs and the annotator's (LLM or human) outputs.

The paper (section 4, "Experiments") evaluates the metamodel against its annotator with
"word-level F1"; we also report seqeval's exact-match span (entity) F1, which is stricter.
All functions are pure and take per-document sequences aligned by index.

Zero-division convention: following seqeval / scikit-learn with ``zero_division=0``, a
precision, recall or F1 whose denominator is zero is reported as 0.0 -- including the case
where gold and prediction are both empty (perfect agreement on "nothing").  Every result also
carries the gold/pred counts (``support``/``n_gold``/``n_pred``) so callers can tell "0.0
because wrong" from "0.0 because there was nothing to find" and skip or special-case it.

Per sub-task (paper section 4.2, the ``eval`` asset): label sub-tasks get precision/recall/F1 of
the ``True`` class (:func:`score_label_subtask`); span sub-tasks get exact-match span P/R/F1
(seqeval on word-level BIO) and word-level P/R/F1 (:func:`score_span_subtask`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from falconer_assets.spans import Span

__all__ = ["ANSWER_LABEL", "label_prf", "word_offsets", "spans_to_bio", "span_prf", "word_prf",
           "SubtaskScore", "score_label_subtask", "score_span_subtask"]

#: Entity type used in the BIO tags ("B-ANS", "I-ANS").
ANSWER_LABEL = "ANS"

_WORD_RE = re.compile(r"\w+|[^\w\s]")


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def label_prf(gold: Sequence[bool], pred: Sequence[bool]) -> dict:
    """Binary precision/recall/F1 of ``pred`` against ``gold``, positive class True.

    Args:
        gold, pred: one truth value per document, same length ``N`` (values are passed
            through ``bool``).

    Returns:
        ``{"precision", "recall", "f1", "accuracy", "support", "n"}``: ``support`` is the number
        of gold positives, ``n`` the number of documents; zero denominators give 0.0 (see module
        docstring; ``accuracy`` is 0.0 when ``n == 0``).

    Raises:
        ValueError: if the lengths differ.

    Source: standard binary P/R/F1 (as ``sklearn.metrics.precision_recall_fscore_support`` with
    ``average="binary", zero_division=0``); used for the get_label sub-tasks.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels, pred has {len(pred)}")
    g = [bool(x) for x in gold]
    p = [bool(x) for x in pred]
    tp = sum(1 for a, b in zip(g, p) if a and b)
    n_pred = sum(p)
    n_gold = sum(g)
    precision, recall, f1 = _prf(tp, n_pred, n_gold)
    correct = sum(1 for a, b in zip(g, p) if a == b)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": correct / len(g) if g else 0.0,
        "support": n_gold,
        "n": len(g),
    }


def word_offsets(text: str) -> list[tuple[int, int]]:
    """Character offsets ``[(start, end), ...]`` of the words of ``text``.

    A word is a maximal run of word characters (``\\w+``: letters, digits, underscore,
    Unicode-aware) or a single punctuation/symbol character (``[^\\w\\s]``); whitespace
    separates words and is never part of one.  ``"New-York, 2024!"`` gives the words
    ``New``, ``-``, ``York``, ``,``, ``2024``, ``!``.
    """
    return [(m.start(), m.end()) for m in _WORD_RE.finditer(text)]


def _check_spans(text: str, spans: Sequence[Span] | None, where: str) -> list[Span]:
    out = []
    for s in spans or ():
        if not isinstance(s, Span):
            raise TypeError(f"{where}: expected Span, got {type(s).__name__}")
        if s.end > len(text) or text[s.start:s.end] != s.text:
            raise ValueError(
                f"{where}: span [{s.start}, {s.end}) {s.text!r} does not match the text "
                f"(text[{s.start}:{s.end}] = {text[s.start:s.end]!r})")
        out.append(s)
    return out


def spans_to_bio(text: str, spans: Sequence[Span] | None) -> list[str]:
    """Word-level BIO tags (``"B-ANS"``, ``"I-ANS"``, ``"O"``) for ``spans`` over ``text``.

    Words come from :func:`word_offsets`.  A word that overlaps a span by at least one
    character is inside it; the first such word of each span is tagged ``B-ANS``, the rest
    ``I-ANS``, so adjacent spans stay separate entities.  Overlapping spans cannot be
    expressed in BIO: spans are processed in ``(start, end)`` order and a word keeps the tag
    of the first span that claimed it; a later span tags only its unclaimed words (its first
    unclaimed word gets ``B-ANS``).  A span covering no word (only whitespace) is dropped.

    Args:
        text: the document.
        spans: its spans (None is treated as no spans); each must satisfy
            ``text[s.start:s.end] == s.text``.

    Returns:
        One tag per word of ``text``, for ``seqeval``.

    Raises:
        ValueError: a span does not match ``text`` (offsets out of range or different text).
        TypeError: an item is not a :class:`Span`.

    Source: BIO/IOB2 tagging as consumed by seqeval (https://github.com/chakki-works/seqeval).
    """
    words = word_offsets(text)
    tags = ["O"] * len(words)
    for span in sorted(_check_spans(text, spans, "spans_to_bio"), key=lambda s: (s.start, s.end)):
        first = True
        for i, (ws, we) in enumerate(words):
            if ws >= span.end:
                break
            if we <= span.start:
                continue
            if tags[i] != "O":
                continue
            tags[i] = f"{'B' if first else 'I'}-{ANSWER_LABEL}"
            first = False
    return tags


def _check_aligned(texts, gold, pred) -> None:
    if not (len(texts) == len(gold) == len(pred)):
        raise ValueError(
            f"texts, gold and pred must have the same length, got {len(texts)}, {len(gold)}, "
            f"{len(pred)}")


def span_prf(
    texts: Sequence[str],
    gold: Sequence[Sequence[Span] | None],
    pred: Sequence[Sequence[Span] | None],
) -> dict:
    """Exact-match span precision/recall/F1 (micro over all documents) with seqeval.

    Each document's gold and predicted spans are converted by :func:`spans_to_bio`; a
    predicted span counts only if it covers exactly the same words as a gold span (span
    boundaries inside a word are rounded out to the word).

    Args:
        texts: ``N`` documents.
        gold, pred: ``N`` span lists each (None = no spans, e.g. a document the plan did not
            retrieve).

    Returns:
        ``{"precision", "recall", "f1", "n_gold", "n_pred"}`` where the counts are entities
        after BIO conversion.  Zero denominators give 0.0 (seqeval ``zero_division=0``), also
        when both sides are empty -- check ``n_gold``/``n_pred``.

    Raises:
        ValueError: length mismatch, or a span that does not match its text.

    Source: seqeval.metrics ``precision_score``/``recall_score``/``f1_score`` (default mode,
    micro average), https://github.com/chakki-works/seqeval.
    """
    _check_aligned(texts, gold, pred)
    y_true = [spans_to_bio(t, g) for t, g in zip(texts, gold)]
    y_pred = [spans_to_bio(t, p) for t, p in zip(texts, pred)]
    n_gold = sum(len(get_entities(seq)) for seq in y_true)
    n_pred = sum(len(get_entities(seq)) for seq in y_pred)
    if not y_true:  # seqeval cannot score zero documents
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "n_gold": 0, "n_pred": 0}
    return {
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "n_gold": n_gold,
        "n_pred": n_pred,
    }


def word_prf(
    texts: Sequence[str],
    gold: Sequence[Sequence[Span] | None],
    pred: Sequence[Sequence[Span] | None],
) -> dict:
    """Word-level precision/recall/F1 (micro over all documents).

    The unit is a ``(document index, word index)`` pair whose word (see :func:`word_offsets`)
    overlaps any span, i.e. is not tagged ``O`` by :func:`spans_to_bio`.  Partial overlaps
    thus earn partial credit, unlike :func:`span_prf`.

    Args:
        texts: ``N`` documents.
        gold, pred: ``N`` span lists each (None = no spans).

    Returns:
        ``{"precision", "recall", "f1", "n_gold", "n_pred"}``, the counts being words inside
        gold / predicted spans.  Zero denominators give 0.0 (see module docstring).

    Raises:
        ValueError: length mismatch, or a span that does not match its text.

    Source: the paper's section 4 evaluates with "word-level F1"; this is the micro-averaged
    version over words.
    """
    _check_aligned(texts, gold, pred)
    g_words: set[tuple[int, int]] = set()
    p_words: set[tuple[int, int]] = set()
    for d, (t, g, p) in enumerate(zip(texts, gold, pred)):
        g_words.update((d, i) for i, tag in enumerate(spans_to_bio(t, g)) if tag != "O")
        p_words.update((d, i) for i, tag in enumerate(spans_to_bio(t, p)) if tag != "O")
    tp = len(g_words & p_words)
    precision, recall, f1 = _prf(tp, len(p_words), len(g_words))
    return {"precision": precision, "recall": recall, "f1": f1,
            "n_gold": len(g_words), "n_pred": len(p_words)}

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
