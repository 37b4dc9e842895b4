"""The whole graph with the real embedded LLM (Qwen2.5-Coder-1.5B via llama.cpp) on 30 real docs.

The 1.5B, the embedded default, is used: the 0.5B wrote the same invalid plan (an int as a
field value) on all three attempts despite the error feedback.

Nothing is scripted: the LLM writes the plan and the annotations, the MiniLM proxy is fine-tuned
on them, mines the corpus and is evaluated. A second materialization is served from the LLM
cache without starting the model.
"""

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from falconer_assets.definitions import build_definitions
from falconer_assets.resources.llm import LLMResource
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets_tests.conftest import debian_records

pytestmark = pytest.mark.slow
TASK = "debian_game_genres"
RUN_CONFIG = {"ops": {"debian_packages__corpus_sample": {"config": {
    "fraction": 1.0, "min_docs": 10, "max_docs": 100, "heldout_fraction": 0.3, "seed": 0}}}}


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "corpora" / "debian_packages").mkdir(parents=True)
    repo_tasks = Path(__file__).resolve().parents[1] / "data" / "tasks"
    (tmp_path / "tasks" / f"{TASK}.yaml").write_text((repo_tasks / f"{TASK}.yaml").read_text())
    lines = [json.dumps(r) for r in debian_records(15, 15, seed=1)]
    (tmp_path / "corpora" / "debian_packages" / "debian_packages.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_whole_graph_with_real_local_llm(data_dir):
    llm = LLMResource(model="qwen2.5-coder-1.5b", cache_path=str(data_dir / "llm_cache.duckdb"))
    # plain MiniLM (the metamodel is not built on a fresh CI machine) with the recipe that
    # learns it from ~20 docs (core.proxy.FRESH_HEAD_RECIPE, see test_assets._proxy)
    proxy = ProxyResource(base_model="minilm", lr=3e-4, head_lr=3e-3, tag_weight=5.0, epochs=6,
                          dev_fraction=0.0, checkpoint_dir=str(data_dir / "checkpoints"))
    defs = build_definitions(data_dir, llm=llm, proxy=proxy)
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), instance=instance, resources=defs.resources,
                                run_config=RUN_CONFIG)
        assert result.success
        checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
        assert all(checks.values()), checks

        plan_meta = instance.get_latest_materialization_event(dg.AssetKey([TASK, "plan"])).asset_materialization.metadata
        assert plan_meta["origin"].value == "llm"
        n_calls = plan_meta["num_calls"].value
        assert n_calls >= 1

        ann_meta = instance.get_latest_materialization_event(
            dg.AssetKey([TASK, "annotations"])).asset_materialization.metadata
        assert ann_meta["annotations"].value == 30 * n_calls
        assert ann_meta["llm_tokens"].value > 0

        con = duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True)
        texts = {r["id"]: r["text"] for r in map(json.loads, (data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl").open())}
        # annotations: every span is an exact slice of its document
        for doc_id, spans in con.execute("SELECT doc_id, spans FROM annotations WHERE kind = 'span'").fetchall():
            for s in json.loads(spans):
                assert texts[doc_id][s["start"]:s["end"]] == s["text"]
        # the LLM found games among the 15 real games of the corpus
        assert con.execute("SELECT count(*) FROM annotations WHERE kind = 'label' AND label").fetchone()[0] >= 5
        mined = con.execute('SELECT doc_id, value, "start", "end" FROM mined').fetchall()
        for doc_id, value, start, end in mined:
            assert start is None or texts[doc_id][start:end] == value
        metrics = con.execute("SELECT count(*) FROM eval_metrics WHERE task = ?", [TASK]).fetchone()[0]
        assert metrics > 0
        con.close()

        # a second run of the LLM stages is served from the cache: the model is never started
        again = LLMResource(model="qwen2.5-coder-1.5b", cache_path=str(data_dir / "llm_cache.duckdb"))
        defs2 = build_definitions(data_dir, llm=again, proxy=proxy)
        result2 = dg.materialize(list(defs2.assets), selection=[dg.AssetKey([TASK, "plan"]), dg.AssetKey([TASK, "annotations"])],
                                 instance=instance, resources=defs2.resources)
        assert result2.success
        meta2 = instance.get_latest_materialization_event(
            dg.AssetKey([TASK, "annotations"])).asset_materialization.metadata
        assert meta2["llm_cache_hits"].value == meta2["llm_calls"].value == 30 * n_calls
