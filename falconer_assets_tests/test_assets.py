"""Materialize the real asset graph on a real Dagster instance and DuckDB file.

Tasks and corpus files are dynamic partitions: the partitions are registered the way the sensors
do it, then ``orchestrate.bring_up_to_date`` (what ``falconer run`` does) executes the missing
partitions, one run per partition; single partitions are re-materialized with ``dg.materialize``.
The LLM is scripted (see conftest); the proxy is the real offline MiniLM, fine-tuned for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from falconer_assets.versions import file_sha256
from falconer_assets.definitions import build_definitions
from falconer_assets.orchestrate import bring_up_to_date
from falconer_assets.partitions import TASK_FILE_PARTITIONS, TASKS, task_file_key
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets_tests.conftest import (
    GAME_PLAN,
    ScriptedLLM,
    check_evaluations,
    latest_metadata,
    make_small_data_dir,
    open_in_chromium,
    register_partitions,
    require_browser,
)

TASK = "debian_game_genres"
FILE = "debian_packages/debian_packages.jsonl"  # the corpus_files partition of the small corpus
MINED_PARTITION = str(task_file_key(TASK, FILE))
PLAN, ANNOTATIONS, PROXY, MINED = (dg.AssetKey(k) for k in ("plan", "annotations", "proxy_checkpoint", "mined"))


def _proxy(data_dir, epochs=6, **kw) -> ProxyResource:
    # plain MiniLM with the pre-metamodel recipe: these tests check the pipeline, and this
    # recipe (proxy.training.FRESH_HEAD_RECIPE) learns the tiny scripted task in few epochs
    return ProxyResource(base_model="minilm", epochs=epochs, lr=3e-4, head_lr=3e-3, tag_weight=5.0,
                         dev_fraction=0.0, checkpoint_dir=str(data_dir / "checkpoints"), **kw)


def _defs(data_dir, plan_source=GAME_PLAN, epochs=6):
    llm = ScriptedLLM(corpus_path=str(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"),
                      plan_source=plan_source, cache_path=str(data_dir / "llm_cache.duckdb"))
    return build_definitions(data_dir, llm=llm, proxy=_proxy(data_dir, epochs))


def _assets(defs) -> list[dg.AssetsDefinition]:
    """The executable assets (not the ``task_spec``/``corpus_files`` sources)."""
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]


def _up_to_date(defs, instance, data_dir, cursor_dir):
    """Sync partitions and run every missing partition with the default configs (``falconer run``).

    With the small corpus the default sample (``min_docs`` 40) is every one of its 40 docs
    (a quarter held out), so the label heuristic has no doc left to add."""
    return bring_up_to_date(defs, instance, data_dir, cursor_dir / "automation_cursor", log=lambda m: None)


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    """The whole graph brought up to date once for the module: ``(data_dir, defs, instance, runs)``."""
    data_dir = make_small_data_dir(tmp_path_factory.mktemp("graph"))
    defs = _defs(data_dir)
    with dg.instance_for_test() as inst:
        yield data_dir, defs, inst, _up_to_date(defs, inst, data_dir, tmp_path_factory.mktemp("cursor"))


def test_whole_graph_materializes(materialized, tmp_path):
    small_data_dir, defs, instance, runs = materialized
    assert runs and all(r.success for r in runs), runs
    # one run per partition, each asset partition exactly once
    done = [(k, r.partition) for r in runs for k in r.asset_keys]
    assert sorted(done, key=str) == sorted([
        ("debian_packages/corpus_sample", None), ("plan", TASK), ("annotations", TASK),
        ("proxy_checkpoint", TASK), ("eval", TASK), ("mined", MINED_PARTITION), ("report", TASK)], key=str)

    # lineage: the stages exist with the expected upstreams and partitions
    graph = defs.resolve_asset_graph()
    assert graph.get(PLAN).parent_keys == {dg.AssetKey("task_spec")}
    assert graph.get(ANNOTATIONS).parent_keys == {PLAN, dg.AssetKey("task_labels"),
                                                  dg.AssetKey(["debian_packages", "corpus_sample"])}
    assert {PLAN, PROXY, dg.AssetKey("corpus_files")} <= graph.get(MINED).parent_keys
    assert graph.get(ANNOTATIONS).partitions_def == TASKS
    assert graph.get(MINED).partitions_def == TASK_FILE_PARTITIONS

    # the plan is shown as code in the metadata
    plan_meta = latest_metadata(instance, PLAN, TASK)
    assert "get_label(texts" in plan_meta["plan"].value
    assert plan_meta["num_calls"].value == 2

    corpus_file = small_data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"
    con = duckdb.connect(str(small_data_dir / "falconer.duckdb"), read_only=True)
    corpus = {json.loads(l)["id"]: json.loads(l)["text"]
              for l in corpus_file.read_text().splitlines() if l.startswith('{"id": "debian')}
    # every sampled doc is annotated for both sub-tasks
    n_sample = con.execute("SELECT count(*) FROM corpus_sample").fetchone()[0]
    assert n_sample == 40
    assert con.execute("SELECT count(*) FROM annotations WHERE task = ?", [TASK]).fetchone()[0] == 2 * n_sample
    # the whole corpus is sampled, so the label heuristic has no doc left to add (see test_label_sampling)
    assert con.execute("SELECT DISTINCT origin FROM annotations WHERE task = ?", [TASK]).fetchall() == [("sample",)]

    # mined rows point at the exact characters of the corpus text, and name their file
    rows = con.execute('SELECT doc_id, field, value, "start", "end", score, file FROM mined WHERE task = ?',
                       [TASK]).fetchall()
    assert rows, "nothing mined"
    for doc_id, field, value, start, end, score, file in rows:
        assert field == "genre" and file == FILE
        assert corpus[doc_id][start:end] == value
        assert 0.0 <= score <= 1.0
    # the proxy learned the task from 30 training docs: most mined genres are real genre words
    genre_words = {"puzzle", "strategy", "arcade", "racing", "shooter", "platform", "adventure", "simulation", "roguelike"}
    assert sum(v.lower() in genre_words for _, _, v, *_ in rows) / len(rows) >= 0.5

    # nothing lost: 40 docs mined + 3 rejects (bad JSON, empty text, duplicate id) = 43 input lines
    mined_meta = latest_metadata(instance, MINED, MINED_PARTITION)
    assert mined_meta["input_records"].value == 43
    assert mined_meta["docs_mined"].value == 40
    assert mined_meta["rows"].value == len(rows)
    assert mined_meta["file_sha256"].value == file_sha256(corpus_file)  # the bytes that were mined
    from falconer_assets.proxy.precision import resolve_precision

    mining_precision = resolve_precision(ProxyResource().inference_precision, "cpu")  # the resource's default
    assert mined_meta["inference_precision"].value == mining_precision
    assert latest_metadata(instance, dg.AssetKey("eval"), TASK)["inference_precision"].value == mining_precision
    rejects = con.execute("SELECT reason, file FROM mining_rejects WHERE task = ?", [TASK]).fetchall()
    reasons = sorted(r for r, _ in rejects)
    assert len(reasons) == 3 and {f for _, f in rejects} == {FILE}
    assert any("duplicate id" in r for r in reasons) and any("empty text" in r for r in reasons)
    assert any("invalid JSON" in r for r in reasons)

    # eval: both sub-tasks scored on the held-out slice, values are probabilities
    metrics = dict(((k, m), v) for k, m, v in con.execute(
        "SELECT kind, metric, value FROM eval_metrics WHERE task = ?", [TASK]).fetchall())
    assert 0.0 <= metrics[("label", "label_f1")] <= 1.0
    assert metrics[("label", "label_f1")] >= 0.6, metrics
    assert 0.0 <= metrics[("span", "span_f1")] <= 1.0
    # each F1 has its 95% document-bootstrap interval as two more rows, bracketing the point value,
    # over the n = 10 held-out docs (40 sampled, a quarter held out)
    ns = dict(((k, m), n) for k, m, n in con.execute(
        "SELECT kind, metric, n FROM eval_metrics WHERE task = ?", [TASK]).fetchall())
    for kind, f1 in (("label", "label_f1"), ("span", "span_f1"), ("span", "word_f1")):
        low, high = metrics[(kind, f"{f1}_low")], metrics[(kind, f"{f1}_high")]
        assert 0.0 <= low <= metrics[(kind, f1)] <= high <= 1.0, (f1, low, metrics[(kind, f1)], high)
        assert ns[(kind, f"{f1}_low")] == ns[(kind, f1)] == 10
    eval_table = latest_metadata(instance, dg.AssetKey("eval"), TASK)["metrics"].value
    assert "F1 [95% CI]" in eval_table and "n (heldout docs)" in eval_table
    assert f"{metrics[('label', 'label_f1')]:.2f} [{metrics[('label', 'label_f1_low')]:.2f}, " in eval_table
    speed = dict(con.execute("SELECT executor, docs_per_s FROM throughput WHERE task = ?", [TASK]).fetchall())
    assert speed["proxy"] > speed["llm"] > 0
    con.close()

    # every blocking asset check passed; mined's yes_rate (a warning) was evaluated (test_proxy_health checks it)
    checks = check_evaluations(instance, [r.run_id for r in runs])
    assert checks.pop(("mined", "yes_rate")) in (True, False)
    assert checks == {("plan", "has_primitive_calls"): True, ("annotations", "nonempty"): True,
                      ("proxy_checkpoint", "no_collapse"): True}

    # nothing edited: bringing it up to date again executes nothing
    assert _up_to_date(defs, instance, small_data_dir, tmp_path) == []


@pytest.mark.ui
def test_report_page_shows_every_mined_span_in_place(materialized, tmp_path):
    """The `report` asset of the whole graph, opened in Debian's Chromium: each highlighted span is
    exactly a mined row of its document, the eval table and the training curve are there."""
    require_browser()
    small_data_dir, defs, instance, runs = materialized
    meta = latest_metadata(instance, dg.AssetKey("report"), TASK)
    page = Path(meta["path"].value)
    assert page == small_data_dir / "reports" / f"{TASK}.html" and meta["url"].value == page.resolve().as_uri()
    shown = open_in_chromium(page.as_uri(), screenshot=tmp_path / "report.png")
    with duckdb.connect(str(small_data_dir / "falconer.duckdb"), read_only=True) as con:
        rows = con.execute('SELECT doc_id, value, field FROM mined WHERE task = ? AND "start" IS NOT NULL',
                           [TASK]).fetchall()
    assert meta["documents_shown"].value == len({d for d, *_ in rows})  # under 40 docs: all of them shown
    assert shown["marks"] and sorted((d, t, f) for t, f, _, d in shown["marks"]) == sorted(rows)
    assert all(title.startswith("genre · score ") for _, _, title, _ in shown["marks"])
    assert "Is this package a game?" in shown["text"] and "n docs" in shown["text"]
    assert [alt for alt, width in shown["images"] if width > 0] == ["training curve per epoch"]


def test_rematerializing_mined_replaces_rows(materialized):
    small_data_dir, defs, instance, runs = materialized
    assert all(r.success for r in runs)
    db = str(small_data_dir / "falconer.duckdb")
    with duckdb.connect(db, read_only=True) as con:
        before = con.execute("SELECT count(*) FROM mined").fetchone()[0]
    assert before > 0
    assert dg.materialize(_assets(defs), selection=[MINED], partition_key=MINED_PARTITION, instance=instance,
                          resources=defs.resources).success
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM mined").fetchone()[0] == before


def test_user_plan_file_replaces_planner_and_empty_output_mines_no_rows(small_data_dir, tmp_path_factory):
    # a plan that classifies but never returns anything: valid, yet mines 0 rows
    (small_data_dir / "tasks" / f"{TASK}.plan.py").write_text(
        'def plan(texts):\n    flags = get_label(texts, "Is this package a game?")\n    return [None for t in texts]\n')
    defs = _defs(small_data_dir, plan_source="this reply must never be used", epochs=1)
    with dg.instance_for_test() as instance:
        runs = _up_to_date(defs, instance, small_data_dir, tmp_path_factory.mktemp("cursor"))
        assert all(r.success for r in runs), runs
        assert ("mined", MINED_PARTITION) in {(k, r.partition) for r in runs for k in r.asset_keys}
        plan_meta = latest_metadata(instance, PLAN, TASK)
        assert plan_meta["origin"].value.startswith("user file")
        assert plan_meta["num_calls"].value == 1
        checks = check_evaluations(instance, [r.run_id for r in runs])
        assert checks[("plan", "has_primitive_calls")] is True
        # every line accounted for, no row mined
        mined_meta = latest_metadata(instance, MINED, MINED_PARTITION)
        assert mined_meta["rows"].value == 0
        assert mined_meta["docs_mined"].value == 40 and mined_meta["input_records"].value == 43
    with duckdb.connect(str(small_data_dir / "falconer.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM mined WHERE task = ?", [TASK]).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM mining_rejects WHERE task = ?", [TASK]).fetchone()[0] == 3


def test_invalid_user_plan_fails_naming_the_file(small_data_dir):
    (small_data_dir / "tasks" / f"{TASK}.plan.py").write_text("import os\ndef plan(texts):\n    return []\n")
    defs = _defs(small_data_dir)
    with dg.instance_for_test() as instance:
        register_partitions(instance, small_data_dir)
        result = dg.materialize(_assets(defs), selection=[PLAN], partition_key=TASK, instance=instance,
                                resources=defs.resources, raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    message = failure.step_failure_data.error.message
    assert f"{TASK}.plan.py" in message and "import" in message.lower()


def test_continual_integration_from_another_task(materialized):
    """init_from_task: task B's proxy starts from task A's checkpoint; A's held-out score is
    recorded before and after B's fine-tuning (paper 5.2). B asks the same sub-tasks as A on the
    same corpus sample, so its annotations come from the sub-task cache, without any LLM call."""
    data_dir, defs, inst, _ = materialized
    other = "game_genres_again"
    text = (data_dir / "tasks" / f"{TASK}.yaml").read_text()
    (data_dir / "tasks" / f"{other}.yaml").write_text(text.replace(f"name: {TASK}", f"name: {other}"))
    register_partitions(inst, data_dir)
    assert other in inst.get_dynamic_partitions(TASKS.name)
    assert dg.materialize(_assets(defs), selection=[PLAN, ANNOTATIONS], partition_key=other, instance=inst,
                          resources=defs.resources).success
    ann_meta = latest_metadata(inst, ANNOTATIONS, other)
    assert ann_meta["sub_tasks_reused"].value == 2 and ann_meta["sub_tasks_annotated"].value == 0
    assert ann_meta["llm_calls"].value == 0 and ann_meta["annotations"].value == 80

    a_dir = data_dir / "checkpoints" / TASK
    continual = {**defs.resources, "proxy": _proxy(data_dir, epochs=1, init_from_task=TASK)}
    result = dg.materialize(_assets(defs), selection=[PROXY], partition_key=other, instance=inst,
                            resources=continual, raise_on_error=False)
    assert result.success
    meta = latest_metadata(inst, PROXY, other)
    assert meta["continual_from"].value == TASK
    assert meta["base_model"].value == str(a_dir)
    before, after = meta["continual_earlier_score_before"].value, meta["continual_earlier_score_after"].value
    assert 0.0 <= after <= 1.0 and before > 0.0  # A's own checkpoint scores on A's held-out slice
    assert "before" in meta["continual_earlier_heldout"].value

    # naming a task without a checkpoint fails clearly, before any training
    bad = {**defs.resources, "proxy": _proxy(data_dir, init_from_task="no_such_task")}
    failed = dg.materialize(_assets(defs), selection=[PROXY], partition_key=other, instance=inst,
                            resources=bad, raise_on_error=False)
    assert not failed.success
    errors = [e.event_specific_data.error.message for e in failed.all_events if e.is_step_failure]
    assert any("no checkpoint" in m for m in errors)
