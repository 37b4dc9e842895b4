"""The enlarged held-out split (issue 10, item 2): a high-score stratum drawn at random and weighted so that
eval's estimate stays unbiased, and the stratified bootstrap of its interval.

Pure parts (falconer_assets.generator.sampling, falconer_assets.metrics) on a simulated population whose
positives and proxy errors both concentrate at high zero-shot scores, where an unweighted enlarged split
is biased; the annotation flow (falconer_assets.generator.annotate) on real Debian documents with a
scripted chat, as test_generator_annotate does.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from falconer_assets.generator.sampling import (
    HELDOUT_STRATUM,
    HeldoutStratum,
    extra_heldout_docs,
    heldout_stratum,
    stratum_weights,
)
from falconer_assets.metrics import DocCounts, label_doc_counts
from falconer_assets_tests.test_generator_annotate import GAMES, PICKS_ONLY, SAMPLED, _run


def test_stratum_weights_give_each_stratum_its_population_share():
    # 25 random held-out docs, 3 of them high; 40 extra high docs; the high stratum is 10% of the pool
    high, low = stratum_weights(3, 22, 40, 0.1)
    assert high == pytest.approx(0.1 * 25 / 43) and low == pytest.approx(0.9 * 25 / 22)
    assert 43 * high + 22 * low == pytest.approx(25)  # the weights sum to the random held-out size
    # no extra doc and a stratum share equal to the sample's: every weight is 1
    assert stratum_weights(5, 20, 0, 0.2) == pytest.approx((1.0, 1.0))
    for bad in [(-1, 5, 0, 0.1), (0, 0, 3, 0.1), (1, 4, 0, 1.0), (1, 4, 0, 0.0)]:
        with pytest.raises(ValueError):
            stratum_weights(*bad)


def test_extra_heldout_docs_aim_at_the_target_within_the_cap():
    assert extra_heldout_docs(2, 30, 0.7, 40) == 40  # ceil(28 / 0.7) = 40
    assert extra_heldout_docs(20, 30, 0.5, 40) == 20
    assert extra_heldout_docs(30, 30, 0.5, 40) == 0 and extra_heldout_docs(0, 0, 0.5, 40) == 0
    assert extra_heldout_docs(0, 30, 0.0, 1000) == 300  # the rate is floored at 0.1
    with pytest.raises(ValueError, match="yes_rate_high"):
        extra_heldout_docs(0, 30, float("nan"), 40)
    with pytest.raises(ValueError, match="counts"):
        extra_heldout_docs(-1, 30, 0.5, 40)


def test_heldout_stratum_draws_from_the_top_of_the_pool_only():
    pool = {f"p{i}": i / 100 for i in range(100)}  # p90..p99 are the top 10%
    random_docs = {"r0": 0.95, "r1": 0.2, "r2": 0.5}
    st = heldout_stratum(pool, random_docs, 5, 0.1, seed=0)
    assert st.threshold == pytest.approx(0.9) and st.p_high == pytest.approx(0.1) and st.pool_size == 100
    assert len(st.extra) == 5 and set(st.extra) <= {f"p{i}" for i in range(90, 100)}
    assert st.random_high == ("r0",) and st.random_low == 2
    assert st.weight("r0") == st.weight(st.extra[0]) == st.weight_high and st.weight("r1") == st.weight_low
    assert HeldoutStratum.from_dict(st.to_dict()) == st
    assert heldout_stratum(pool, random_docs, 5, 0.1, seed=0) == st  # seeded
    assert heldout_stratum(pool, random_docs, 500, 0.1, seed=0).extra == tuple(sorted(f"p{i}" for i in range(90, 100)))
    # nothing to add, or no random doc in the low stratum (its weight would be undefined): no stratum
    assert heldout_stratum(pool, random_docs, 0, 0.1, seed=0) is None
    assert heldout_stratum(pool, {"r0": 0.99}, 5, 0.1, seed=0) is None
    assert heldout_stratum({}, random_docs, 5, 0.1, seed=0) is None
    with pytest.raises(ValueError, match="score of 'p1'"):
        heldout_stratum({**pool, "p1": float("nan")}, random_docs, 5, 0.1, seed=0)


def _population(n: int = 4000, seed: int = 0):
    """Scores, gold labels and proxy answers: positives are rare (8%) and mostly at high scores, and the
    proxy errs more there (20% vs 4%), so the high stratum's F1 differs from the corpus'."""
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    gold = rng.random(n) < 0.01 + 0.5 * score ** 6
    pred = gold ^ (rng.random(n) < np.where(score > 0.8, 0.2, 0.04))
    return score, gold, pred


def test_weighted_estimate_is_unbiased_where_the_unweighted_enlarged_split_is_not():
    score, gold, pred = _population()
    n = len(score)
    truth_f1 = label_doc_counts(gold, pred).prf()["f1"]
    weighted, unweighted, random_only, prevalence = [], [], [], []
    for rep in range(300):
        order = random.Random(rep).sample(range(n), 25 + 500)
        heldout, pool = order[:25], order[25:]
        st = heldout_stratum({str(i): score[i] for i in pool}, {str(i): score[i] for i in heldout}, 40, 0.1, rep)
        docs = heldout + [int(i) for i in st.extra]
        w = [st.weight(str(i)) for i in docs]
        counts = label_doc_counts(gold[docs], pred[docs])
        weighted.append(counts.prf(w)["f1"])
        unweighted.append(counts.prf()["f1"])
        random_only.append(label_doc_counts(gold[heldout], pred[heldout]).prf()["f1"])
        prevalence.append(np.dot(w, gold[docs]) / 25)
    # the weighted positive count is an unbiased estimate of the corpus' (Horvitz-Thompson by stratum)
    assert np.mean(prevalence) == pytest.approx(gold.mean(), rel=0.05)
    # the weighted F1 (a ratio of unbiased counts) is close to the truth; the unweighted one is not
    bias_w, bias_u = abs(np.mean(weighted) - truth_f1), abs(np.mean(unweighted) - truth_f1)
    assert bias_w < 0.03 and bias_u > 2 * bias_w, (truth_f1, np.mean(weighted), np.mean(unweighted))
    # and the enlargement pays: a smaller error than the 25 random docs alone
    rmse = lambda xs: float(np.sqrt(np.mean((np.asarray(xs) - truth_f1) ** 2)))  # noqa: E731
    assert rmse(weighted) < 0.75 * rmse(random_only), (rmse(weighted), rmse(random_only))


def test_the_bootstrap_resamples_within_strata():
    # stratum A (weight 1): every doc a true positive; stratum B (weight 0.5): every doc a false positive.
    # Keeping each stratum's size, every resample has the same sums: the interval is the point F1.
    counts = DocCounts(tp=np.array([1.0] * 6 + [0.0] * 4), fp=np.array([0.0] * 6 + [1.0] * 4), fn=np.zeros(10))
    w = [1.0] * 6 + [0.5] * 4
    point = counts.prf(w)["f1"]
    assert counts.f1_interval(w, n_boot=200) == pytest.approx((point, point))
    # one weight value (or none): the plain document bootstrap, whose resamples mix A and B
    low, high = counts.f1_interval(None, n_boot=200)
    assert low < counts.prf()["f1"] < high
    assert counts.f1_interval([2.0] * 10, n_boot=200) == pytest.approx((low, high))


# ------------------------------------------------------------------------------- the annotation flow

ENLARGE = PICKS_ONLY.model_copy(update={"heldout_positives": 5, "heldout_top_share": 0.3})


def test_the_heldout_split_is_enlarged_from_the_high_stratum_and_weighted():
    cache, strata, calls, loads = {}, {}, [], []
    result = _run(cache, calls, heuristic=ENLARGE, scorer_loads=loads, strata=strata)
    st = result.stratum
    assert st is not None and st.extra and loads == [1]
    sample = dict(SAMPLED)
    training = {r.doc_id for r in result.rows if r.split == "train"}
    # the extra docs: games (the scorer ranks them first), outside the sample and the training picks
    assert set(st.extra) <= GAMES and not set(st.extra) & (set(sample) | training)
    heldout_random = [i for i, split in SAMPLED if split == "heldout"]
    for sub in result.sub_tasks:
        extra = [r for r in sub.rows if r.origin == HELDOUT_STRATUM]
        assert sorted(r.doc_id for r in extra) == list(st.extra) and {r.split for r in extra} == {"heldout"}
        heldout = [r for r in sub.rows if r.split == "heldout"]
        assert {r.doc_id for r in heldout} == set(heldout_random) | set(st.extra)
        for r in heldout:
            high = r.doc_id in st.extra or r.doc_id in GAMES
            assert r.weight == pytest.approx(st.weight_high if high else st.weight_low)
        assert sum(r.weight for r in heldout) == pytest.approx(len(heldout_random))
        assert all(r.weight == 1.0 for r in sub.rows if r.split == "train")
    assert result.llm_calls == len(calls) == len(result.rows)

    # a re-run: the decision and the answers come from the caches, no scoring, no call
    again_calls, again_loads = [], []
    again = _run(cache, again_calls, heuristic=ENLARGE, scorer_loads=again_loads, strata=strata)
    assert again_calls == [] and again_loads == [] and again.stratum == st and again.rows == result.rows


def test_heldout_positives_0_keeps_the_random_heldout_split():
    result = _run({}, [], heuristic=ENLARGE.model_copy(update={"heldout_positives": 0}))
    assert result.stratum is None and all(r.weight == 1.0 and r.origin != HELDOUT_STRATUM for r in result.rows)
    assert {r.doc_id for r in result.rows if r.split == "heldout"} == {i for i, s in SAMPLED if s == "heldout"}


# --------------------------------------------------------------------- the assets, on a real instance

def test_annotations_enlarge_the_heldout_split_and_eval_weights_it(tmp_path):
    """corpus_sample -> plan -> annotations with a small training pool (so a held-out pool is left), then
    proxy_checkpoint -> eval: the extra held-out rows are in the warehouse with their weights, and eval's
    label F1 is the weighted one."""
    import dagster as dg
    import duckdb

    from falconer_assets.definitions import build_definitions
    from falconer_assets.inputs.corpus import Document
    from falconer_assets.metrics import score_label_subtask
    from falconer_assets.proxy.model import NTEProxy
    from falconer_assets.warehouse.store import read_annotations
    from falconer_assets_tests.conftest import GAME_Q, ScriptedLLM, latest_metadata, make_small_data_dir
    from falconer_assets_tests.test_label_sampling import SAMPLE_CONFIG, TASK, _assets, _proxy, register_partitions

    data_dir = make_small_data_dir(tmp_path)
    corpus = data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"
    llm = ScriptedLLM(corpus_path=str(corpus), cache_path=str(data_dir / "llm_cache.duckdb"))
    proxy = _proxy(data_dir).model_copy(update={"epochs": 1, "max_steps": 2, "dev_fraction": 0.0, "max_length": 128})
    defs = build_definitions(data_dir, llm=llm, proxy=proxy)
    config = {"candidate_pool": 10, "heldout_positives": 30, "heldout_extra_max": 3, "heldout_top_share": 0.15}
    with dg.instance_for_test() as instance:
        register_partitions(instance, data_dir)
        assert dg.materialize(_assets(defs), selection=[dg.AssetKey(["debian_packages", "corpus_sample"])],
                              instance=instance, resources=defs.resources,
                              run_config={"ops": {"debian_packages__corpus_sample": {"config": SAMPLE_CONFIG}}}).success
        assert dg.materialize(_assets(defs), selection=[dg.AssetKey("plan"), dg.AssetKey("annotations")],
                              partition_key=TASK, instance=instance, resources=defs.resources,
                              run_config={"ops": {"annotations": {"config": config}}}).success
        stratum = latest_metadata(instance, "annotations", TASK)["heldout_stratum"].value
        assert stratum is not None and len(stratum["extra"]) == 3 and stratum["pool_size"] == 20
        with duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True) as con:
            sample = dict(con.execute("SELECT doc_id, split FROM corpus_sample").fetchall())
            heldout = read_annotations(con, TASK, "heldout")
            train_ids = {r.doc_id for r in read_annotations(con, TASK, "train")}
        random_heldout = {d for d, s in sample.items() if s == "heldout"}
        for kind in ("label", "span"):
            rows = [r for r in heldout if r.kind == kind]
            assert {r.doc_id for r in rows} == random_heldout | set(stratum["extra"])
            assert sum(r.weight for r in rows) == pytest.approx(len(random_heldout))
        assert not set(stratum["extra"]) & (train_ids | set(sample))

        assert dg.materialize(_assets(defs), selection=[dg.AssetKey("proxy_checkpoint"), dg.AssetKey("eval")],
                              partition_key=TASK, instance=instance, resources=defs.resources).success
    labels = [r for r in heldout if r.kind == "label" and r.usable]
    texts = {d.id: d.text for d in map(lambda r: Document(r["id"], r["text"]), _records(corpus))}
    model = NTEProxy.load(str(proxy.checkpoint_path(TASK)), device="cpu", precision=proxy.inference_precision)
    expected = score_label_subtask(GAME_Q, [bool(r.label) for r in labels],
                                   model.get_label([texts[r.doc_id] for r in labels], GAME_Q), [r.weight for r in labels])
    with duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True) as con:
        got = dict(con.execute("SELECT metric, value FROM eval_metrics WHERE task = ? AND kind = 'label'",
                               [TASK]).fetchall())
        n = con.execute("SELECT max(n) FROM eval_metrics WHERE task = ? AND kind = 'label'", [TASK]).fetchone()[0]
    assert n == len(labels) == len(random_heldout) + 3
    for metric in ("label_f1", "label_precision", "label_recall", "label_f1_low", "label_f1_high"):
        assert got[metric] == pytest.approx(expected.metrics[metric]), metric


def _records(path):
    import json

    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "id" in rec and "text" in rec:
            yield rec
