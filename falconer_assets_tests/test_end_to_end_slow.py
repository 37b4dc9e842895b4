"""The whole graph with the real embedded LLM (Qwen2.5-Coder-1.5B via llama.cpp) on 30 real docs.

The 1.5B, the embedded default, is used: the 0.5B wrote the same invalid plan (an int as a
field value) on all three attempts despite the error feedback.

Nothing is scripted: ``orchestrate.bring_up_to_date`` (what ``falconer run`` does) registers the
task and corpus-file partitions and runs each missing partition: the LLM writes the plan and the
annotations, the MiniLM proxy is fine-tuned on them, mines the corpus file and is evaluated. A
second ``bring_up_to_date`` runs nothing; re-annotating with the sub-task cache emptied is served
from the LLM cache without starting the model.
"""

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from falconer_assets.definitions import build_definitions
from falconer_assets.orchestrate import bring_up_to_date
from falconer_assets.partitions import task_file_key
from falconer_assets.resources.llm import LLMResource
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets_tests.conftest import check_evaluations, debian_records, latest_metadata

pytestmark = pytest.mark.slow
TASK = "debian_game_genres"
FILE = "debian_packages/debian_packages.jsonl"


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "corpora" / "debian_packages").mkdir(parents=True)
    repo_tasks = Path(__file__).resolve().parents[1] / "data" / "tasks"
    (tmp_path / "tasks" / f"{TASK}.yaml").write_text((repo_tasks / f"{TASK}.yaml").read_text())
    lines = [json.dumps(r) for r in debian_records(15, 15, seed=1)]
    (tmp_path / "corpora" / "debian_packages" / "debian_packages.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_whole_graph_with_real_local_llm(data_dir, tmp_path_factory):
    llm = LLMResource(model="qwen2.5-coder-1.5b", cache_path=str(data_dir / "llm_cache.duckdb"))
    # plain MiniLM (the metamodel is not built on a fresh CI machine) with the fresh-head recipe
    # (proxy.training.FRESH_HEAD_RECIPE) at 12 epochs: on the real LLM's ~8 training genre spans,
    # 6 epochs extracted none, which the blocking no_collapse check rightly stopped
    proxy = ProxyResource(base_model="minilm", lr=3e-4, head_lr=3e-3, tag_weight=5.0, epochs=12,
                          dev_fraction=0.0, checkpoint_dir=str(data_dir / "checkpoints"))
    defs = build_definitions(data_dir, llm=llm, proxy=proxy)
    cursor = tmp_path_factory.mktemp("cursor") / "automation_cursor"
    with dg.instance_for_test() as instance:
        # what `falconer run` does: sync the partitions, run every missing partition (default
        # configs: the 30-doc corpus is sampled whole, a quarter held out)
        runs = bring_up_to_date(defs, instance, data_dir, cursor)
        assert runs and all(r.success for r in runs), runs
        done = {(k, r.partition) for r in runs for k in r.asset_keys}
        assert {("plan", TASK), ("annotations", TASK), ("proxy_checkpoint", TASK), ("eval", TASK),
                ("mined", str(task_file_key(TASK, FILE)))} <= done
        checks = check_evaluations(instance, [r.run_id for r in runs])
        assert checks and all(checks.values()), checks

        plan_meta = latest_metadata(instance, "plan", TASK)
        assert plan_meta["origin"].value == "llm"
        n_calls = plan_meta["num_calls"].value
        assert n_calls >= 1

        con = duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True)
        calls = json.loads(con.execute("SELECT calls FROM plans WHERE task = ?", [TASK]).fetchone()[0])
        n_sub_tasks = len({(c["kind"], c["instruction"]) for c in calls})  # a repeated question is annotated once
        ann_meta = latest_metadata(instance, "annotations", TASK)
        assert ann_meta["annotations"].value == 30 * n_sub_tasks
        assert ann_meta["llm_tokens"].value > 0

        texts = {r["id"]: r["text"] for r in map(json.loads, (data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl").open())}
        # annotations: every span is an exact slice of its document
        for doc_id, spans in con.execute("SELECT doc_id, spans FROM annotations WHERE kind = 'span'").fetchall():
            for s in json.loads(spans):
                assert texts[doc_id][s["start"]:s["end"]] == s["text"]
        # the LLM found games among the 15 real games of the corpus
        assert con.execute("SELECT count(*) FROM annotations WHERE kind = 'label' AND label").fetchone()[0] >= 5
        mined = con.execute('SELECT doc_id, value, "start", "end", file FROM mined').fetchall()
        for doc_id, value, start, end, file in mined:
            assert file == FILE
            assert start is None or texts[doc_id][start:end] == value
        assert latest_metadata(instance, "mined", task_file_key(TASK, FILE))["input_records"].value == 30
        metrics = con.execute("SELECT count(*) FROM eval_metrics WHERE task = ?", [TASK]).fetchone()[0]
        assert metrics > 0
        con.close()

        # nothing edited: a second `falconer run` executes nothing
        assert bring_up_to_date(defs, instance, data_dir, cursor) == []

        # a re-run of the LLM stages with the sub-task cache emptied is served from the LLM cache:
        # the model is never started
        with duckdb.connect(str(data_dir / "falconer.duckdb")) as rw:
            rw.execute("DELETE FROM subtask_annotations")
        again = LLMResource(model="qwen2.5-coder-1.5b", cache_path=str(data_dir / "llm_cache.duckdb"))
        defs2 = build_definitions(data_dir, llm=again, proxy=proxy)
        assets2 = [a for a in defs2.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]
        result2 = dg.materialize(assets2, selection=[dg.AssetKey("plan"), dg.AssetKey("annotations")],
                                 partition_key=TASK, instance=instance, resources=defs2.resources)
        assert result2.success
        meta2 = latest_metadata(instance, "annotations", TASK)
        assert meta2["sub_tasks_annotated"].value == n_sub_tasks
        assert meta2["llm_cache_hits"].value == meta2["llm_calls"].value == 30 * n_sub_tasks
