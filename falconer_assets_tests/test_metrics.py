"""Tests for falconer_assets.metrics, against hand-computed values."""

from __future__ import annotations

import pytest

from falconer_assets.metrics import label_prf, span_prf, spans_to_bio, word_offsets, word_prf
from falconer_assets.spans import Span

FOX = "The quick brown fox jumps over the lazy dog"
#      0   4     10    16  20    26   31  35   40


def sp(text: str, phrase: str, nth: int = 0) -> Span:
    """Span of the nth occurrence of ``phrase`` in ``text``."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(phrase, start + 1)
    return Span.of(text, start, start + len(phrase))


# --- label_prf --------------------------------------------------------------------------------

def test_label_prf_hand_computed():
    gold = [True, True, True, False, False, False]
    pred = [True, True, False, True, False, False]
    # tp=2 fp=1 fn=1 tn=2 -> P=2/3 R=2/3 F1=2/3, accuracy 4/6
    m = label_prf(gold, pred)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["support"] == 3 and m["n"] == 6


def test_label_prf_asymmetric():
    # tp=1 fp=3 fn=0 -> P=1/4 R=1 F1=2*(1/4)/(5/4)=0.4
    m = label_prf([True, False, False, False], [True, True, True, True])
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((0.25, 1.0, 0.4))


def test_label_prf_zero_division_is_zero():
    m = label_prf([False, False], [False, False])
    assert (m["precision"], m["recall"], m["f1"], m["support"]) == (0.0, 0.0, 0.0, 0)
    assert m["accuracy"] == 1.0


def test_label_prf_length_mismatch_raises():
    with pytest.raises(ValueError, match="gold has 2 labels, pred has 1"):
        label_prf([True, False], [True])


# --- word segmentation and BIO ----------------------------------------------------------------

def test_word_offsets_splits_words_and_punctuation():
    text = "New-York, 2024!  ok"
    words = [text[s:e] for s, e in word_offsets(text)]
    assert words == ["New", "-", "York", ",", "2024", "!", "ok"]
    assert word_offsets("") == []


def test_spans_to_bio_basic_and_adjacent_spans():
    tags = spans_to_bio(FOX, [sp(FOX, "quick brown"), sp(FOX, "fox")])
    assert tags == ["O", "B-ANS", "I-ANS", "B-ANS", "O", "O", "O", "O", "O"]


def test_spans_to_bio_partial_word_overlap_counts_as_inside():
    # "ick bro" starts inside "quick" and ends inside "brown"
    tags = spans_to_bio(FOX, [Span.of(FOX, 6, 13)])
    assert tags == ["O", "B-ANS", "I-ANS", "O", "O", "O", "O", "O", "O"]


def test_spans_to_bio_overlapping_spans_first_wins():
    tags = spans_to_bio(FOX, [sp(FOX, "brown fox jumps"), sp(FOX, "quick brown")])
    # sorted by start: "quick brown" claims words 1-2, the later span keeps fox/jumps with a new B
    assert tags == ["O", "B-ANS", "I-ANS", "B-ANS", "I-ANS", "O", "O", "O", "O"]


def test_spans_to_bio_rejects_misaligned_span():
    with pytest.raises(ValueError, match="does not match the text"):
        spans_to_bio(FOX, [Span(0, 3, "Dog")])
    with pytest.raises(ValueError, match="does not match the text"):
        spans_to_bio("short", [Span(3, 9, "abcdef")])


# --- span_prf / word_prf ----------------------------------------------------------------------

def test_exact_match_gives_f1_one():
    gold = [[sp(FOX, "quick brown fox")], [], [sp(FOX, "lazy dog")]]
    pred = [[sp(FOX, "quick brown fox")], None, [sp(FOX, "lazy dog")]]
    texts = [FOX, FOX, FOX]
    s = span_prf(texts, gold, pred)
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 1.0, 1.0)
    assert (s["n_gold"], s["n_pred"]) == (2, 2)
    w = word_prf(texts, gold, pred)
    assert (w["precision"], w["recall"], w["f1"]) == (1.0, 1.0, 1.0)
    assert (w["n_gold"], w["n_pred"]) == (5, 5)


def test_partial_overlap_span_f1_zero_word_f1_exact():
    gold = [[sp(FOX, "quick brown fox")]]  # words 1,2,3
    pred = [[sp(FOX, "brown fox jumps")]]  # words 2,3,4
    s = span_prf([FOX], gold, pred)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert (s["n_gold"], s["n_pred"]) == (1, 1)
    w = word_prf([FOX], gold, pred)
    # tp=2 (brown, fox); P=2/3, R=2/3, F1=2/3
    assert w["precision"] == pytest.approx(2 / 3)
    assert w["recall"] == pytest.approx(2 / 3)
    assert w["f1"] == pytest.approx(2 / 3)


def test_micro_average_over_documents():
    t2 = "Alice met Bob in Paris."
    gold = [[sp(FOX, "fox"), sp(FOX, "dog")], [sp(t2, "Alice"), sp(t2, "Bob")]]
    pred = [[sp(FOX, "fox")], [sp(t2, "Alice met Bob"), sp(t2, "Paris")]]
    # spans: gold 4, pred 3, exact matches 1 (fox) -> P=1/3 R=1/4 F1=2/7
    s = span_prf([FOX, t2], gold, pred)
    assert s["precision"] == pytest.approx(1 / 3)
    assert s["recall"] == pytest.approx(1 / 4)
    assert s["f1"] == pytest.approx(2 / 7)
    # words: gold {fox, dog, Alice, Bob}=4, pred {fox, Alice, met, Bob, Paris}=5, tp=3
    # P=3/5 R=3/4 F1=2*(0.6*0.75)/1.35=2/3
    w = word_prf([FOX, t2], gold, pred)
    assert (w["n_gold"], w["n_pred"]) == (4, 5)
    assert w["precision"] == pytest.approx(3 / 5)
    assert w["recall"] == pytest.approx(3 / 4)
    assert w["f1"] == pytest.approx(2 / 3)


def test_both_empty_gives_zero_and_counts():
    for fn in (span_prf, word_prf):
        m = fn([FOX], [[]], [[]])
        assert m["f1"] == 0.0 and m["n_gold"] == 0 and m["n_pred"] == 0
    assert span_prf([], [], [])["f1"] == 0.0


def test_span_metrics_length_mismatch_raises():
    with pytest.raises(ValueError, match="same length"):
        span_prf([FOX], [[]], [])
    with pytest.raises(ValueError, match="same length"):
        word_prf([FOX, FOX], [[], []], [[]])
