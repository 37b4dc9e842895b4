"""Tests for falconer_assets.metrics, against hand-computed values, seqeval and simulation."""

from __future__ import annotations

import random

import numpy as np
import pytest

from falconer_assets.metrics import (
    DocCounts,
    bootstrap_interval,
    f1_from_counts,
    label_doc_counts,
    label_prf,
    score_label_subtask,
    score_span_subtask,
    span_doc_counts,
    span_prf,
    spans_to_bio,
    word_doc_counts,
    word_offsets,
    word_prf,
)
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


# --- per-document counts ----------------------------------------------------------------------

def test_label_doc_counts_sum_to_label_prf():
    gold = [True, True, True, False, False, False]
    pred = [True, True, False, True, False, False]
    c = label_doc_counts(gold, pred)
    assert c.tp.tolist() == [1, 1, 0, 0, 0, 0] and c.fp.tolist() == [0, 0, 0, 1, 0, 0]
    assert c.fn.tolist() == [0, 0, 1, 0, 0, 0]
    m, ref = c.prf(), label_prf(gold, pred)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((ref["precision"], ref["recall"], ref["f1"]))
    with pytest.raises(ValueError, match="gold has 2 labels, pred has 1"):
        label_doc_counts([True, False], [True])


def test_f1_from_counts_matches_prf_and_zero_division():
    assert float(f1_from_counts(2, 1, 1)) == pytest.approx(2 / 3)
    assert float(f1_from_counts(0, 0, 0)) == 0.0 and float(f1_from_counts(0, 3, 2)) == 0.0
    assert f1_from_counts(np.array([1, 0]), np.array([0, 0]), np.array([0, 0])).tolist() == [1.0, 0.0]


def _random_doc(rng: random.Random) -> tuple[str, list[Span], list[Span]]:
    """A text of random words and two random span sets over it: whole words, partial words,
    overlapping and adjacent spans, sometimes none; pred often copies some gold spans."""
    words = [rng.choice(["alpha", "beta", "gamma", "delta", "x", "42", "-", ",", "Zeta"])
             for _ in range(rng.randint(0, 14))]
    text = " ".join(words)

    def spans(k: int) -> list[Span]:
        out = []
        for _ in range(k):
            if not text:
                break
            a = rng.randrange(len(text))
            b = min(len(text), a + rng.randint(1, 12))
            out.append(Span.of(text, a, b))
        return out

    gold = spans(rng.randint(0, 4))
    pred = [s for s in gold if rng.random() < 0.6] + spans(rng.randint(0, 3))
    return text, gold, pred


@pytest.mark.parametrize("seed", range(40))
def test_per_document_counts_equal_seqeval_micro(seed):
    rng = random.Random(seed)
    docs = [_random_doc(rng) for _ in range(rng.randint(1, 12))]
    texts, gold, pred = (list(x) for x in zip(*docs))
    s, w = span_prf(texts, gold, pred), word_prf(texts, gold, pred)
    sc, wc = span_doc_counts(texts, gold, pred), word_doc_counts(texts, gold, pred)
    for counts, ref in ((sc, s), (wc, w)):
        m = counts.prf()
        assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((ref["precision"], ref["recall"], ref["f1"]))
        assert (counts.tp.sum() + counts.fn.sum(), counts.tp.sum() + counts.fp.sum()) == (ref["n_gold"], ref["n_pred"])
    # the sub-task score's point values are these counts' (one BIO pass), equal to seqeval's
    sub = score_span_subtask("q", texts, gold, pred).metrics
    assert (sub["span_precision"], sub["span_recall"], sub["span_f1"]) == pytest.approx(
        (s["precision"], s["recall"], s["f1"]))
    assert (sub["word_precision"], sub["word_recall"], sub["word_f1"]) == pytest.approx(
        (w["precision"], w["recall"], w["f1"]))
    assert (sub["gold_spans"], sub["pred_spans"]) == (s["n_gold"], s["n_pred"])


# --- the document bootstrap -------------------------------------------------------------------

def _fixed_accuracy_set(n_docs: int) -> tuple[list[bool], list[bool]]:
    """``n_docs`` labels (a multiple of 20) repeating one block of 20: 8 gold positives, of which
    the proxy finds 6, plus 2 false positives -> F1 = 12 / 16 = 0.75 at every size."""
    gold = [True] * 8 + [False] * 12
    pred = [True] * 6 + [False] * 2 + [True] * 2 + [False] * 10
    k = n_docs // 20
    return gold * k, pred * k


def test_interval_contains_point_and_narrows_with_more_docs():
    widths = {}
    for n in (20, 400):
        gold, pred = _fixed_accuracy_set(n)
        c = label_doc_counts(gold, pred)
        f1 = c.prf()["f1"]
        low, high = c.f1_interval()
        assert f1 == pytest.approx(0.75)
        assert 0.0 <= low <= f1 <= high <= 1.0
        widths[n] = high - low
    # width shrinks like 1/sqrt(n): sqrt(400 / 20) = 4.5
    assert widths[20] > 0.3 and widths[400] < widths[20] / 3, widths


def test_interval_is_reproducible_for_a_seed():
    gold, pred = _fixed_accuracy_set(40)
    c = label_doc_counts(gold, pred)
    assert c.f1_interval(seed=3) == c.f1_interval(seed=3)
    assert score_label_subtask("q", gold, pred).metrics == score_label_subtask("q", gold, pred).metrics
    assert c.f1_interval(seed=3) != c.f1_interval(seed=4)


def test_vectorised_interval_equals_bootstrap_interval_with_a_score_fn():
    rng = np.random.default_rng(0)
    c = DocCounts(rng.integers(0, 4, 37), rng.integers(0, 3, 37), rng.integers(0, 3, 37))

    def micro_f1(idx):
        return float(f1_from_counts(c.tp[idx].sum(), c.fp[idx].sum(), c.fn[idx].sum()))

    for seed in (0, 7):
        assert c.f1_interval(n_boot=500, seed=seed) == pytest.approx(
            bootstrap_interval(micro_f1, c.n, n_boot=500, seed=seed))


def test_bootstrap_interval_of_a_mean_matches_normal_theory():
    # a sanity check of the percentile method on a plain mean: the 95% interval of the mean of
    # 400 values with sd 1 is about +-1.96 / sqrt(400) = +-0.098
    x = np.random.default_rng(1).normal(0.0, 1.0, 400)
    low, high = bootstrap_interval(lambda idx: float(x[idx].mean()), len(x), n_boot=2000)
    assert low < x.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * x.std() / 20, rel=0.15)


def test_interval_coverage_on_simulated_held_out_sets():
    # documents from a known population: P(gold) = 0.4, the proxy right 80% of the time, so the
    # population micro F1 is 2*.32 / (2*.32 + .12 + .08) = 0.762; about 95% of the intervals of
    # 100-doc samples should contain it (the percentile interval is approximate)
    truth = 0.64 / 0.84
    rng = np.random.default_rng(2)
    hits = 0
    trials = 300
    for t in range(trials):
        gold = rng.random(100) < 0.4
        pred = np.where(rng.random(100) < 0.8, gold, ~gold)
        low, high = label_doc_counts(gold, pred).f1_interval(seed=t)
        hits += low <= truth <= high
    assert 0.88 <= hits / trials <= 0.99, hits / trials


def test_weighted_counts_equal_duplicated_documents():
    gold = [True, True, False, True, False, False, True]
    pred = [True, False, True, True, False, True, True]
    weights = [2, 1, 3, 1, 0, 1, 2]
    dup_gold = [g for g, k in zip(gold, weights) for _ in range(k)]
    dup_pred = [p for p, k in zip(pred, weights) for _ in range(k)]
    assert label_doc_counts(gold, pred).prf(weights) == pytest.approx(label_doc_counts(dup_gold, dup_pred).prf())
    weighted = score_label_subtask("q", gold, pred, weights=weights).metrics
    dup = score_label_subtask("q", dup_gold, dup_pred).metrics
    for k in ("label_precision", "label_recall", "label_f1", "accuracy"):
        assert weighted[k] == pytest.approx(dup[k]), k

    rng = random.Random(5)
    texts, sgold, spred = (list(x) for x in zip(*[_random_doc(rng) for _ in range(6)]))
    sweights = [1, 2, 0, 3, 1, 2]
    rep = lambda xs: [x for x, k in zip(xs, sweights) for _ in range(k)]  # noqa: E731
    weighted = score_span_subtask("q", texts, sgold, spred, weights=sweights).metrics
    dup = score_span_subtask("q", rep(texts), rep(sgold), rep(spred)).metrics
    for k in ("span_precision", "span_recall", "span_f1", "word_precision", "word_recall", "word_f1"):
        assert weighted[k] == pytest.approx(dup[k]), k


def test_uniform_weights_change_nothing():
    gold, pred = _fixed_accuracy_set(40)
    c = label_doc_counts(gold, pred)
    assert c.f1_interval(weights=[2.5] * 40) == pytest.approx(c.f1_interval())
    assert c.prf(weights=[2.5] * 40) == pytest.approx(c.prf())


def test_subtask_scores_carry_intervals_that_bracket_the_point():
    gold, pred = _fixed_accuracy_set(20)
    m = score_label_subtask("q", gold, pred).metrics
    assert m["label_f1_low"] <= m["label_f1"] <= m["label_f1_high"]
    assert m["gold_positive"] == 8
    rng = random.Random(11)
    texts, sgold, spred = (list(x) for x in zip(*[_random_doc(rng) for _ in range(25)]))
    s = score_span_subtask("q", texts, sgold, spred)
    assert s.n == 25
    for name in ("span_f1", "word_f1"):
        assert 0.0 <= s.metrics[f"{name}_low"] <= s.metrics[name] <= s.metrics[f"{name}_high"] <= 1.0
    # no document: point and interval are 0 (zero-division convention), not an error
    assert score_label_subtask("q", [], []).metrics["label_f1_high"] == 0.0
    assert score_span_subtask("q", [], [], []).metrics["span_f1_high"] == 0.0


def test_bootstrap_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_docs"):
        bootstrap_interval(lambda idx: 0.0, 0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(lambda idx: 0.0, 5, confidence=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_interval(lambda idx: 0.0, 5, n_boot=0)
    with pytest.raises(ValueError, match="not finite"):
        bootstrap_interval(lambda idx: float("nan"), 5)
    c = label_doc_counts([True, False], [True, True])
    with pytest.raises(ValueError, match="one value per document"):
        c.f1_interval(weights=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        c.prf(weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="1-D of one length"):
        DocCounts(np.zeros(2), np.zeros(3), np.zeros(2))
