"""Materialize the real asset graph with dg.materialize on a real Dagster instance and DuckDB file.

The LLM is scripted (see conftest); the proxy is the real offline MiniLM, fine-tuned for real.
"""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import pytest

from falconer_assets.definitions import build_definitions
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets_tests.conftest import GAME_PLAN, ScriptedLLM

TASK = "debian_game_genres"
FAST_RUN_CONFIG = {"ops": {"debian_packages__corpus_sample": {"config": {
    "fraction": 1.0, "min_docs": 10, "max_docs": 100, "heldout_fraction": 0.25, "seed": 0}}}}


def _proxy(data_dir, epochs=6, **kw) -> ProxyResource:
    # plain MiniLM with the pre-metamodel recipe: these tests check the pipeline, and this
    # recipe (core.proxy.FRESH_HEAD_RECIPE) learns the tiny scripted task in few epochs
    return ProxyResource(base_model="minilm", epochs=epochs, lr=3e-4, head_lr=3e-3, tag_weight=5.0,
                         dev_fraction=0.0, checkpoint_dir=str(data_dir / "checkpoints"), **kw)


def _defs(data_dir, plan_source=GAME_PLAN, epochs=6):
    llm = ScriptedLLM(corpus_path=str(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"),
                      plan_source=plan_source, cache_path=str(data_dir / "llm_cache.duckdb"))
    return build_definitions(data_dir, llm=llm, proxy=_proxy(data_dir, epochs))


def _materialize(defs, instance, selection=None):
    assets = [a for a in defs.assets]
    run_config = FAST_RUN_CONFIG if selection is None else {}  # corpus_sample config only when it runs
    return dg.materialize(assets, selection=selection, instance=instance, resources=defs.resources,
                          run_config=run_config, raise_on_error=False)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    """The whole graph materialized once for the module: ``(data_dir, defs, instance, result)``."""
    from falconer_assets_tests.conftest import make_small_data_dir

    data_dir = make_small_data_dir(tmp_path_factory.mktemp("graph"))
    defs = _defs(data_dir)
    with dg.instance_for_test() as inst:
        yield data_dir, defs, inst, _materialize(defs, inst)


def test_whole_graph_materializes(materialized):
    small_data_dir, defs, instance, result = materialized
    assert result.success

    # lineage: the six stages exist with the expected upstreams
    graph = defs.resolve_asset_graph()
    annotations_key = dg.AssetKey([TASK, "annotations"])
    assert graph.get(annotations_key).parent_keys == {dg.AssetKey([TASK, "plan"]),
                                                      dg.AssetKey(["debian_packages", "corpus_sample"])}
    assert graph.get(dg.AssetKey([TASK, "mined"])).parent_keys == {
        dg.AssetKey([TASK, "plan"]), dg.AssetKey([TASK, "proxy_checkpoint"])}

    # the plan is shown as code in the metadata
    plan_mat = instance.get_latest_materialization_event(dg.AssetKey([TASK, "plan"])).asset_materialization
    assert "get_label(texts" in plan_mat.metadata["plan"].value
    assert plan_mat.metadata["num_calls"].value == 2

    con = duckdb.connect(str(small_data_dir / "falconer.duckdb"), read_only=True)
    corpus = {json.loads(l)["id"]: json.loads(l)["text"]
              for l in (small_data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl").read_text().splitlines()
              if l.startswith('{"id": "debian')}
    # every sampled doc is annotated for both sub-tasks
    n_sample = con.execute("SELECT count(*) FROM corpus_sample").fetchone()[0]
    assert n_sample == 40
    assert con.execute("SELECT count(*) FROM annotations WHERE task = ?", [TASK]).fetchone()[0] == 2 * n_sample
    # fraction 1.0 samples every doc, so the label heuristic has no doc left to add (see test_label_sampling)
    assert con.execute("SELECT DISTINCT origin FROM annotations WHERE task = ?", [TASK]).fetchall() == [("sample",)]

    # mined rows point at the exact characters of the corpus text
    rows = con.execute('SELECT doc_id, field, value, "start", "end", score FROM mined WHERE task = ?', [TASK]).fetchall()
    assert rows, "nothing mined"
    for doc_id, field, value, start, end, score in rows:
        assert field == "genre"
        assert corpus[doc_id][start:end] == value
        assert 0.0 <= score <= 1.0
    # the proxy learned the task from 30 training docs: most mined genres are real genre words
    genre_words = {"puzzle", "strategy", "arcade", "racing", "shooter", "platform", "adventure", "simulation", "roguelike"}
    assert sum(v.lower() in genre_words for _, _, v, *_ in rows) / len(rows) >= 0.5

    # nothing lost: 40 docs mined + 3 rejects (bad JSON, empty text, duplicate id) = 43 input lines
    mined_meta = instance.get_latest_materialization_event(dg.AssetKey([TASK, "mined"])).asset_materialization.metadata
    assert mined_meta["input_records"].value == 43
    assert mined_meta["docs_mined"].value == 40
    reasons = sorted(r[0] for r in con.execute("SELECT reason FROM mining_rejects WHERE task = ?", [TASK]).fetchall())
    assert len(reasons) == 3
    assert any("duplicate id" in r for r in reasons) and any("empty text" in r for r in reasons)
    assert any("invalid JSON" in r for r in reasons)

    # eval: both sub-tasks scored on the held-out slice, values are probabilities
    metrics = dict(((k, m), v) for k, m, v in con.execute(
        "SELECT kind, metric, value FROM eval_metrics WHERE task = ?", [TASK]).fetchall())
    assert 0.0 <= metrics[("label", "label_f1")] <= 1.0
    assert metrics[("label", "label_f1")] >= 0.6, metrics
    assert 0.0 <= metrics[("span", "span_f1")] <= 1.0
    speed = dict(con.execute("SELECT executor, docs_per_s FROM throughput WHERE task = ?", [TASK]).fetchall())
    assert speed["proxy"] > speed["llm"] > 0
    con.close()

    # every asset check passed
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"has_primitive_calls": True, "nonempty": True}


def test_rematerializing_mined_replaces_rows(materialized):
    small_data_dir, defs, instance, result = materialized
    assert result.success
    db = str(small_data_dir / "falconer.duckdb")
    with duckdb.connect(db, read_only=True) as con:
        before = con.execute("SELECT count(*) FROM mined").fetchone()[0]
    assert _materialize(defs, instance, selection=[dg.AssetKey([TASK, "mined"])]).success
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM mined").fetchone()[0] == before


def test_user_plan_file_replaces_planner_and_empty_output_fails_check(small_data_dir, instance):
    # a plan that classifies but never returns anything: valid, yet mines 0 rows
    (small_data_dir / "tasks" / f"{TASK}.plan.py").write_text(
        'def plan(texts):\n    flags = get_label(texts, "Is this package a game?")\n    return [None for t in texts]\n')
    defs = _defs(small_data_dir, plan_source="this reply must never be used", epochs=1)
    result = _materialize(defs, instance)
    plan_mat = instance.get_latest_materialization_event(dg.AssetKey([TASK, "plan"])).asset_materialization
    assert plan_mat.metadata["origin"].value.startswith("user file")
    checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks[("mined", "nonempty")] is False
    assert checks[("plan", "has_primitive_calls")] is True


def test_invalid_user_plan_fails_naming_the_file(small_data_dir, instance):
    (small_data_dir / "tasks" / f"{TASK}.plan.py").write_text("import os\ndef plan(texts):\n    return []\n")
    defs = _defs(small_data_dir)
    result = _materialize(defs, instance, selection=[dg.AssetKey([TASK, "plan"])])
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    message = failure.step_failure_data.error.message
    assert f"{TASK}.plan.py" in message and "import" in message.lower()


def test_continual_integration_from_another_task(tmp_path):
    """init_from_task: task B's proxy starts from task A's checkpoint; A's held-out score is
    recorded before and after B's fine-tuning (paper 5.2)."""
    from falconer_assets_tests.conftest import make_small_data_dir

    data_dir = make_small_data_dir(tmp_path)
    text = (data_dir / "tasks" / f"{TASK}.yaml").read_text()
    (data_dir / "tasks" / "game_genres_again.yaml").write_text(text.replace(f"name: {TASK}", "name: game_genres_again"))
    defs = _defs(data_dir)
    with dg.instance_for_test() as inst:
        assert _materialize(defs, inst).success
        a_dir = data_dir / "checkpoints" / TASK
        b_key = dg.AssetKey(["game_genres_again", "proxy_checkpoint"])
        continual = dg.Definitions(assets=defs.assets, resources={
            **defs.resources, "proxy": _proxy(data_dir, epochs=1, init_from_task=TASK)})
        result = dg.materialize(list(continual.assets), selection=[b_key], instance=inst,
                                resources=continual.resources, raise_on_error=False)
        assert result.success
        meta = inst.get_latest_materialization_event(b_key).asset_materialization.metadata
        assert meta["continual_from"].value == TASK
        assert meta["base_model"].value == str(a_dir)
        before, after = meta["continual_earlier_score_before"].value, meta["continual_earlier_score_after"].value
        assert 0.0 <= after <= 1.0 and before > 0.0  # A's own checkpoint scores on A's held-out slice
        assert "before" in meta["continual_earlier_heldout"].value

        # naming a task without a checkpoint fails clearly, before any training
        bad = dg.Definitions(assets=defs.assets, resources={
            **defs.resources, "proxy": _proxy(data_dir, init_from_task="no_such_task")})
        failed = dg.materialize(list(bad.assets), selection=[b_key], instance=inst,
                                resources=bad.resources, raise_on_error=False)
        assert not failed.success
        errors = [e.event_specific_data.error.message for e in failed.all_events if e.is_step_failure]
        assert any("no checkpoint" in m for m in errors)
