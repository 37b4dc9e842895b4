"""Incremental lineage on a real Dagster instance and DuckDB file (issue: edit one task, pay only for it).

Two tasks over two corpora, built once for the module with the real automation conditions
(``orchestrate.bring_up_to_date``), then edited; each test asks ``dg.evaluate_automation_conditions``
what it would run and checks it is exactly the stale part of exactly the edited task. The LLM
is scripted (conftest); the proxy is the real MiniLM, fine-tuned for 8 epochs of batches of 4 on 128-token
prompts: the former 2 epochs of 8 at 256 tokens extracted no genre and answered "no" to every held-out doc,
and 4 epochs of 4 did too once a second label question joined the plan (test_new_sub_task_...), so
``proxy_checkpoint``'s blocking ``no_collapse`` check stopped ``mined``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from falconer_assets import sync
from falconer_assets.definitions import build_definitions
from falconer_assets.orchestrate import bring_up_to_date, execute, load_cursor
from falconer_assets.partitions import task_file_key
from falconer_assets_tests.conftest import GAME_Q, GENRE_Q, ScriptedLLM, latest_metadata, make_small_data_dir
from falconer_assets_tests.test_assets import _proxy

A, B = "debian_game_genres", "debian_games_other"
FILE_A, FILE_B = "debian_packages/debian_packages.jsonl", "other_packages/part-1.jsonl"
# plans that write a row for every doc, so row counts do not depend on the small proxy's quality
GENRE_PLAN = f'''def plan(texts):
    is_game = get_label(texts, "{GAME_Q}")
    genres = get_span(texts, "{GENRE_Q}")
    return [{{"is_game": ok, "genre": spans}} for ok, spans in zip(is_game, genres)]
'''
LABEL_PLAN = f'''def plan(texts):
    flags = get_label(texts, "{GAME_Q}")
    return [{{"is_game": ok}} for ok in flags]
'''
LIB_Q = "Is this package a library?"
# mined is partitioned by task x file over every file: a task's pairs with another corpus's
# files are materialized as cheap no-ops (0 rows, "skipped"), so they are requested too
MINED_A = {str(task_file_key(A, f)) for f in (FILE_A, FILE_B)}
MINED_B = {str(task_file_key(B, f)) for f in (FILE_A, FILE_B)}


class RoutingLLM(ScriptedLLM):
    """The scripted LLM, plus: the planner writes :data:`GENRE_PLAN` when the instruction asks for a
    genre, else :data:`LABEL_PLAN`; :data:`LIB_Q` is answered from the Debian section."""

    def _answer(self, messages: list[dict]) -> str:
        from falconer_assets.llm.prompts import label_messages

        content = messages[-1]["content"]
        asked = content.split("Instruction:")[-1].split("\n")[0].lower()
        if "get_label" in json.dumps(messages):
            return f"```python\n{GENRE_PLAN if 'genre' in asked else LABEL_PLAN}```"
        key = json.dumps(messages, sort_keys=True)
        for path in Path(self.corpus_path).parent.parent.glob("*/*.jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if key == json.dumps(label_messages(rec.get("text", ""), LIB_Q), sort_keys=True):
                    return "Yes" if str(rec.get("section", "")).startswith("lib") else "No"
        return super()._answer(messages)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """``(data_dir, defs, instance, cursor_path)`` with both tasks fully materialized."""
    root = tmp_path_factory.mktemp("lineage")
    (root / "data").mkdir()
    data_dir = make_small_data_dir(root / "data")
    other = data_dir / "corpora" / "other_packages"
    other.mkdir()
    shutil.copy(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl", other / "part-1.jsonl")
    spec = (data_dir / "tasks" / f"{A}.yaml").read_text() + "  - name: is_game\n    description: is it a game\n"
    (data_dir / "tasks" / f"{A}.yaml").write_text(spec)
    (data_dir / "tasks" / f"{B}.yaml").write_text(
        spec.replace(f"name: {A}", f"name: {B}").replace("corpus: debian_packages", "corpus: other_packages"))
    llm = RoutingLLM(corpus_path=str(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"),
                     cache_path=str(data_dir / "llm_cache.duckdb"))
    defs = build_definitions(data_dir, llm=llm, proxy=_proxy(data_dir, epochs=8, max_length=128, batch_size=4))
    (root / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        cursor_path = root / "cursor"
        runs = bring_up_to_date(defs, instance, data_dir, cursor_path, log=lambda m: None)
        assert runs and all(r.success for r in runs), [(r.asset_keys, r.partition, r.success) for r in runs]
        yield data_dir, defs, instance, cursor_path


def _tick(graph) -> dict[str, set]:
    """One automation evaluation (cursor persisted): ``{asset key: requested partition keys}``."""
    data_dir, defs, instance, cursor_path = graph
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=load_cursor(cursor_path))
    from dagster_shared.serdes import serialize_value

    cursor_path.write_text(serialize_value(result.cursor))
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    return {k.to_user_string(): {str(p) for p in result.get_requested_partitions(k)}
            for k in keys if result.get_num_requested(k)}


def _run(graph, requested: dict[str, set]) -> None:
    """Execute a tick's requests, one run per partition key."""
    data_dir, defs, instance, _ = graph
    by_partition: dict[str, list] = {}
    for key, parts in requested.items():
        for p in parts:
            by_partition.setdefault(p, []).append(dg.AssetKey.from_user_string(key))
    for p, keys in sorted(by_partition.items()):
        assert execute(defs, instance, keys, p, "test").success, (keys, p)


def _sync_tasks(graph) -> sync.Changes:
    data_dir, _, instance, _ = graph
    changes = sync.sync_tasks(data_dir, instance)
    sync.apply(instance, changes)
    return changes


def _latest(instance, key: str, partition: str) -> dict:
    """Raw metadata values of the latest materialization of ``key[partition]``."""
    return {k: getattr(v, "value", v) for k, v in latest_metadata(instance, key, partition).items()}


def _count(instance, key: str, partition: str) -> int:
    return len(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=100).records)


def _mined_rows(data_dir: Path, where: str = "true") -> list[tuple]:
    con = duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True)
    try:
        return con.execute(f'SELECT task, file, doc_id, field, value, "start", "end", score FROM mined '
                           f"WHERE {where} ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_built_graph_is_quiet_and_every_partition_has_rows(graph):
    data_dir, _, instance, _ = graph
    assert set(instance.get_dynamic_partitions("tasks")) == {A, B}
    assert set(instance.get_dynamic_partitions("corpus_files")) == {FILE_A, FILE_B}
    assert set(instance.get_materialized_partitions(dg.AssetKey("mined"))) == MINED_A | MINED_B
    # each task mined its own corpus only: the cross pairs are no-ops
    assert {(t, f) for t, f, *_ in _mined_rows(data_dir)} == {(A, FILE_A), (B, FILE_B)}
    skipped = _latest(instance, "mined", str(task_file_key(A, FILE_B)))
    assert (skipped["rows"], skipped["skipped"]) == (0, "file of corpus 'other_packages'")
    assert _tick(graph) == {}


def test_comment_only_plan_edit_requests_nothing_beyond_plan(graph):
    data_dir, _, instance, _ = graph
    (data_dir / "tasks" / f"{B}.plan.py").write_text("# reviewed by a human\n" + GENRE_PLAN.replace(")\n", ")  # one label per doc\n", 1))
    changes = _sync_tasks(graph)
    assert [e.partition for e in changes.events] == [B]
    assert _tick(graph) == {"plan": {B}}
    _run(graph, {"plan": {B}})
    assert _latest(instance, "plan", B)["origin"] == f"user file {B}.plan.py"
    assert _tick(graph) == {}


def test_instruction_edit_reruns_exactly_that_tasks_chain(graph):
    data_dir, _, instance, _ = graph
    proxies_b = _count(instance, "proxy_checkpoint", B)
    spec = data_dir / "tasks" / f"{A}.yaml"
    spec.write_text(spec.read_text().replace("Retrieve packages that are games and extract their genre.",
                                             "Retrieve packages that are games."))
    _sync_tasks(graph)
    assert _tick(graph) == {"plan": {A}}
    _run(graph, {"plan": {A}})
    assert "get_span" not in _latest(instance, "plan", A)["plan"]
    # the new plan asks one of the two old sub-tasks: annotations re-run, from the sub-task cache
    assert _tick(graph) == {"annotations": {A}}
    _run(graph, {"annotations": {A}})
    meta = _latest(instance, "annotations", A)
    assert (meta["llm_calls"], meta["sub_tasks_reused"], meta["sub_tasks_annotated"]) == (0, 1, 0)
    # a different annotation set: the proxy retrains, and eval/mined wait for it
    assert _tick(graph) == {"proxy_checkpoint": {A}}
    _run(graph, {"proxy_checkpoint": {A}})
    assert _latest(instance, "proxy_checkpoint", A)["retrained"] is True
    assert _tick(graph) == {"eval": {A}, "mined": MINED_A}
    _run(graph, {"eval": {A}, "mined": MINED_A})
    # the report waits for both, then re-renders once
    assert _tick(graph) == {"report": {A}}
    _run(graph, {"report": {A}})
    assert _tick(graph) == {}
    assert {r[3] for r in _mined_rows(data_dir, f"task = '{A}'")} == {"is_game"}  # the new plan's field
    assert _count(instance, "proxy_checkpoint", B) == proxies_b


def test_same_sub_tasks_in_a_new_plan_skip_retraining(graph):
    data_dir, _, instance, _ = graph
    proxies = _count(instance, "proxy_checkpoint", B)
    (data_dir / "tasks" / f"{B}.plan.py").write_text(GENRE_PLAN.replace("genres", "spans_per_doc"))
    _sync_tasks(graph)
    assert _tick(graph) == {"plan": {B}}
    _run(graph, {"plan": {B}})
    assert _tick(graph) == {"annotations": {B}}
    _run(graph, {"annotations": {B}})
    assert _latest(instance, "annotations", B)["sub_tasks_reused"] == 2
    # same annotation set: no proxy request; the plan changed, so eval and mining re-run
    assert _tick(graph) == {"eval": {B}, "mined": MINED_B}
    _run(graph, {"eval": {B}, "mined": MINED_B})
    # a renamed variable mines the same rows and scores the same: their data versions are unchanged,
    # so the report is not re-rendered (contrast the instruction edit above)
    assert _tick(graph) == {}
    assert _count(instance, "proxy_checkpoint", B) == proxies


def test_new_sub_task_pays_the_llm_for_that_sub_task_only(graph):
    data_dir, defs, instance, _ = graph
    plan = LABEL_PLAN.replace('return [{"is_game": ok} for ok in flags]',
                              f'libs = get_label(texts, "{LIB_Q}")\n'
                              '    return [{"is_game": g and not l} for g, l in zip(flags, libs)]')
    assert LIB_Q in plan
    (data_dir / "tasks" / f"{A}.plan.py").write_text(plan)
    _sync_tasks(graph)
    assert _tick(graph) == {"plan": {A}}
    _run(graph, {"plan": {A}})
    assert _tick(graph) == {"annotations": {A}}
    _run(graph, {"annotations": {A}})
    meta = _latest(instance, "annotations", A)
    con = duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True)
    n_sample = con.execute("SELECT count(*) FROM corpus_sample WHERE corpus = 'debian_packages'").fetchone()[0]
    con.close()
    assert (meta["sub_tasks_reused"], meta["sub_tasks_annotated"]) == (1, 1)
    assert meta["llm_calls"] == n_sample  # one call per sampled doc, for the new question only
    bring_up_to_date(defs, instance, data_dir, graph[3], log=lambda m: None)
    assert _tick(graph) == {}


def test_new_corpus_file_is_one_run_and_leaves_existing_rows_untouched(graph):
    data_dir, defs, instance, _ = graph
    before = _mined_rows(data_dir)
    src = data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"
    recs = [json.loads(line) for line in src.read_text().splitlines()[:12] if line.startswith("{") and line.endswith("}")]
    new = data_dir / "corpora" / "debian_packages" / "debian_packages-2.jsonl"
    new.write_text("".join(json.dumps({**r, "id": r["id"] + ":v2"}) + "\n" for r in recs))
    sensor = defs.resolve_sensor_def("falconer_corpus_files")
    result = sensor(dg.build_sensor_context(instance=instance))
    new_key = "debian_packages/debian_packages-2.jsonl"
    assert [str(r.partition_key) for r in result.run_requests] == [str(task_file_key(A, new_key))]
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, req.partition_keys)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    assert _tick(graph) == {}  # the automation does not request the new file a second time
    assert execute(defs, instance, [dg.AssetKey("mined")], str(result.run_requests[0].partition_key), "test").success
    after = _mined_rows(data_dir)
    assert [r for r in after if r[1] != new_key] == before
    assert {r[2] for r in after if r[1] == new_key} <= {r["id"] + ":v2" for r in recs}
    assert _latest(instance, "mined", str(task_file_key(A, new_key)))["input_records"] == len(recs)
    # the sensor is idempotent: nothing new on the next tick
    assert sensor(dg.build_sensor_context(instance=instance)).run_requests == []


def test_rerunning_a_mining_partition_keeps_the_row_count(graph):
    data_dir, defs, instance, _ = graph
    before = _mined_rows(data_dir)
    con = duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True)
    rejects = con.execute("SELECT count(*) FROM mining_rejects").fetchone()[0]
    con.close()
    assert execute(defs, instance, [dg.AssetKey("mined")], str(task_file_key(A, FILE_A)), "test").success
    assert _mined_rows(data_dir) == before
    con = duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM mining_rejects").fetchone()[0] == rejects
    con.close()


def test_schedule_remines_only_files_changed_in_place(graph):
    data_dir, defs, instance, _ = graph
    schedule = defs.resolve_schedule_def("falconer_remine_changed_files")
    assert isinstance(schedule(dg.build_schedule_context(instance=instance)), dg.SkipReason)
    src = data_dir / "corpora" / "other_packages" / "part-1.jsonl"
    lines = src.read_text().splitlines()
    src.write_text("\n".join(lines[:-5]) + "\n")  # the file shrinks in place
    requests = schedule(dg.build_schedule_context(instance=instance))
    assert [str(r.partition_key) for r in requests] == [str(task_file_key(B, FILE_B))]
    assert execute(defs, instance, [dg.AssetKey("mined")], str(requests[0].partition_key), "test").success
    assert isinstance(schedule(dg.build_schedule_context(instance=instance)), dg.SkipReason)


def test_task_sensor_adds_and_removes_tasks_and_names_bad_files(graph):
    data_dir, defs, instance, _ = graph
    sensor = defs.resolve_sensor_def("falconer_task_files")
    (data_dir / "tasks" / "broken_task.yaml").write_text("name: broken_task\ninstruction: [unclosed\n")
    extra = data_dir / "tasks" / "extra_task.yaml"
    extra.write_text((data_dir / "tasks" / f"{A}.yaml").read_text().replace(f"name: {A}", "name: extra_task"))
    context = dg.build_sensor_context(instance=instance)
    result = sensor(context)
    adds = [k for r in result.dynamic_partitions_requests if isinstance(r, dg.AddDynamicPartitionsRequest)
            for k in r.partition_keys]
    assert adds == ["extra_task"]  # the malformed file is left out, the others are unaffected
    assert sorted((e.asset_key.to_user_string(), e.partition) for e in result.asset_events) == [
        ("task_labels", "extra_task"), ("task_spec", "extra_task")]
    errors = sync.sync_tasks(data_dir, instance).errors
    assert list(errors) == [str(data_dir / "tasks" / "broken_task.yaml")]
    assert "broken_task.yaml" in next(iter(errors.values()))
    instance.add_dynamic_partitions("tasks", adds)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    assert sensor(dg.build_sensor_context(instance=instance)).asset_events == []  # reported once
    extra.unlink()
    (data_dir / "tasks" / "broken_task.yaml").unlink()
    result = sensor(dg.build_sensor_context(instance=instance))
    deletes = [k for r in result.dynamic_partitions_requests if isinstance(r, dg.DeleteDynamicPartitionsRequest)
               for k in r.partition_keys]
    assert deletes == ["extra_task"]
    instance.delete_dynamic_partition("tasks", "extra_task")
    assert set(instance.get_dynamic_partitions("tasks")) == {A, B}


def test_falconer_run_replans_a_task_whose_plan_another_process_built_from_a_reverted_edit(graph):
    data_dir, defs, instance, cursor_path = graph
    plan_file = data_dir / "tasks" / f"{B}.plan.py"
    kept = plan_file.read_text()
    # the earlier tests mined new and changed files: only the reports may be left to re-render
    assert {tuple(r.asset_keys) for r in bring_up_to_date(defs, instance, data_dir, cursor_path,
                                                           log=lambda m: None)} <= {("report",)}
    # another process (no shared automation cursor) sees the plan file deleted and re-plans with the LLM
    plan_file.unlink()
    _sync_tasks(graph)
    assert execute(defs, instance, [dg.AssetKey("plan")], B, "other process").success
    assert _latest(instance, "plan", B)["origin"] == "llm"
    # the edit is reverted: the task file is back to what this cursor last saw
    plan_file.write_text(kept)
    runs = bring_up_to_date(defs, instance, data_dir, cursor_path, log=lambda m: None)
    assert [(r.asset_keys, r.partition, r.trigger) for r in runs][:1] == [(["plan"], B, "plan_built_from_other_spec")]
    assert _latest(instance, "plan", B)["origin"] == f"user file {B}.plan.py"
    assert all(r.success for r in runs) and _tick(graph) == {}
