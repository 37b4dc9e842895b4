"""Fault injection on the LLM (issue 12, item 4), real processes and real files, no model.

* A flaky OpenAI-compatible endpoint (a real HTTP server in a thread: HTTP 429, 500, a stalled request,
  HTML, JSON without choices, cut-off JSON): the `annotations` asset retries every fault with backoff,
  counts them in its metadata, fails clearly on a call that never succeeds, and the re-run pays for no
  answer twice.
* The embedded LLM server killed with SIGKILL mid-annotation (a fake server process following the
  embedded server's child protocol, started by the real ``LlamaServer``): it is restarted and annotation
  goes on; when it cannot be restarted the run fails, and the re-run pays for no call twice (the call
  cache file kept every answer) and loses no annotation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from falconer_assets.definitions import build_definitions
from falconer_assets.llm.embedded import LlamaServer
from falconer_assets.resources.llm import LLMResource
from falconer_assets.warehouse.store import write_corpus_sample
from falconer_assets_tests.conftest import GAME_PLAN, latest_metadata, make_small_data_dir, register_partitions
from falconer_assets_tests.fake_llm_server import FakeLLMServer

FAKE_SERVER = Path(__file__).with_name("fake_llm_server.py")
TASK = "debian_game_genres"
ANNOTATIONS_CONFIG = {"label_heuristic": False, "heldout_positives": 0}
CALLS = 8
"""4 sampled docs x 2 sub-tasks (the game label, then the genre span) = 8 annotation calls."""


@pytest.fixture(scope="module")
def instance():
    """One Dagster instance for the module (each test has its own data folder and warehouse)."""
    with dg.instance_for_test() as inst:
        yield inst


def _assets(defs):
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]


def _data_dir(tmp_path: Path, instance) -> Path:
    """The small Debian data dir with the plan as a user file (the planner makes no LLM call) and a corpus
    sample of 4 docs (3 train, 1 held out) written straight into the warehouse; partitions registered."""
    data_dir = make_small_data_dir(tmp_path)
    (data_dir / "tasks" / f"{TASK}.plan.py").write_text(GAME_PLAN)
    lines = (data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines[:4]]
    with duckdb.connect(str(data_dir / "falconer.duckdb")) as con:
        write_corpus_sample(con, "debian_packages", [(i, "heldout" if k == 0 else "train") for k, i in enumerate(ids)],
                            [])
    register_partitions(instance, data_dir)
    return data_dir


def _annotate(defs, instance, with_plan: bool = True):
    """(``plan`` +) ``annotations`` of the task; returns the run's result."""
    keys = [dg.AssetKey("plan")] * with_plan + [dg.AssetKey("annotations")]
    return dg.materialize(_assets(defs), selection=keys, partition_key=TASK, instance=instance,
                          resources=defs.resources, raise_on_error=False,
                          run_config={"ops": {"annotations": {"config": ANNOTATIONS_CONFIG}}})


def _failure(instance, result) -> tuple[str, dict]:
    """Description and metadata of the failed step of ``result``'s run."""
    events = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    assert events, "the run has no step failure"
    data = events[0].dagster_event.step_failure_data
    user = data.user_failure_data
    if user is None:
        return data.error.message, {}
    return user.description, {k: v.value for k, v in user.metadata.items()}


def _annotation_rows(data_dir: Path) -> list[tuple]:
    with duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True) as con:
        return con.execute("SELECT kind, doc_id, split, label, spans, parse_ok FROM annotations WHERE task = ? "
                           "ORDER BY ALL", [TASK]).fetchall()


def test_flaky_endpoint_is_retried_counted_in_metadata_and_a_rerun_pays_nothing_twice(tmp_path, instance):
    # one fault per call for the first six calls (each retried once: 12 requests), the 7th call answered,
    # then the 8th call's three attempts (max_retries=2) all get 429: the run fails after 7 answered calls
    faults = {0: "429", 2: "timeout", 4: "500", 6: "garbage_html", 8: "garbage_json", 10: "cut_json",
              13: "429", 14: "429", 15: "429"}
    server = FakeLLMServer(faults, stall_s=3.0).start()
    try:
        data_dir = _data_dir(tmp_path, instance)
        llm = LLMResource(base_url=server.base_url, model="fake", cache_path=str(data_dir / "llm_cache.duckdb"),
                          timeout_s=1.0, max_retries=2, retry_delay_s=0.01, max_concurrency=1)
        defs = build_definitions(data_dir, llm=llm)
        first = _annotate(defs, instance)
        assert not first.success
        message, meta = _failure(instance, first)
        assert "RateLimitError" in message and "a re-run pays for none of them again" in message, message
        assert meta == {"llm_retries": 6 + 2, "llm_rate_limited": 1 + 3, "llm_server_errors": 1,
                        "llm_no_response": 1, "llm_garbage_responses": 3, "llm_failures": 1,
                        "llm_server_starts": 0}
        paid_before = list(server.answered)
        assert len(paid_before) == 7 and len(set(paid_before)) == 7

        second = _annotate(defs, instance, with_plan=False)  # the endpoint has recovered
        assert second.success
        meta = {k: getattr(v, "value", v) for k, v in latest_metadata(instance, "annotations", TASK).items()}
        # the label sub-task (4 calls) finished before the failure: reused whole from the sub-task cache;
        # the span sub-task's first 3 answers come from the call cache
        assert (meta["sub_tasks_reused"], meta["llm_calls"], meta["llm_cache_hits"]) == (1, 4, 3)
        assert (meta["llm_retries"], meta["llm_failures"], meta["llm_garbage_responses"]) == (0, 0, 0)
        assert meta["garbage_answers"] == 0
        # every call was paid exactly once over both runs, and every annotation is there
        assert len(server.answered) == CALLS and len(set(server.answered)) == CALLS
        rows = _annotation_rows(data_dir)
        assert len(rows) == CALLS and all(r[-1] for r in rows)
    finally:
        server.stop()


def test_garbage_answers_that_never_stop_fail_the_call_clearly_and_are_never_cached(tmp_path):
    from falconer_assets.llm.client import ChatLLM, GarbageResponseError
    from falconer_assets.llm.prompts import label_messages

    server = FakeLLMServer({0: "garbage_json", 1: "garbage_html", 2: "cut_json"}).start()
    try:
        llm = ChatLLM(model="fake", base_url=server.base_url, cache_path=tmp_path / "cache.duckdb",
                      max_retries=2, retry_delay_s=0.01)
        messages = label_messages("Tetris is a puzzle game.", "Is this package a game?")
        with pytest.raises(GarbageResponseError, match="not a chat completion 3 times"):
            llm.chat(messages)
        assert len(llm.cache) == 0  # nothing cached from a garbage answer
        assert (llm.stats.garbage_responses, llm.stats.retries, llm.stats.failures) == (3, 2, 1)
        assert llm.chat(messages).text == "Yes" and len(llm.cache) == 1
    finally:
        server.stop()


def test_embedded_server_killed_mid_annotation_restarts_then_a_rerun_pays_no_call_twice(tmp_path, instance,
                                                                                         monkeypatch):
    data_dir = _data_dir(tmp_path, instance)
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))  # passes ensure_gguf's magic check; the fake server never reads it
    paid = tmp_path / "answered.log"
    starts = []

    def command(self) -> list[str]:
        """Start 1 and 2: a fake server that kills itself (SIGKILL) on its 4th request; start 3: a server that
        cannot start; start 4 (the re-run): a healthy one."""
        starts.append(len(starts) + 1)
        fake = [sys.executable, str(FAKE_SERVER), "--log", str(paid)]
        return {1: fake + ["--die-after", "3"], 2: fake + ["--die-after", "3"],
                3: [sys.executable, "-c", "import sys; sys.exit(3)"]}.get(starts[-1], fake)

    monkeypatch.setattr(LlamaServer, "command", command)
    llm = LLMResource(model=str(gguf), cache_path=str(data_dir / "llm_cache.duckdb"), max_retries=1, n_threads=1)
    defs = build_definitions(data_dir, llm=llm)
    first = _annotate(defs, instance)
    assert not first.success
    message, meta = _failure(instance, first)
    assert "LlamaServerError" in message and "exited with code 3" in message, message
    # killed twice: the first death restarted it, the second could not
    assert starts == [1, 2, 3] and meta["llm_server_starts"] == 2 and meta["llm_failures"] == 1
    assert meta["llm_no_response"] == 4  # per death: the request it died on, and the refused retry
    answered_first = paid.read_text().split()
    assert len(answered_first) == 6

    second = _annotate(defs, instance, with_plan=False)
    assert second.success, _failure(instance, second)
    meta = {k: getattr(v, "value", v) for k, v in latest_metadata(instance, "annotations", TASK).items()}
    # the label sub-task (4 calls) finished before the death and is reused whole from the sub-task cache;
    # the span sub-task's first 2 answers come from the call cache, its 2 others are paid now
    assert (meta["sub_tasks_reused"], meta["llm_calls"], meta["llm_cache_hits"]) == (1, 4, 2)
    assert meta["llm_server_starts"] == 1
    answered = paid.read_text().split()
    assert len(answered) == CALLS and len(set(answered)) == CALLS  # no call paid twice
    rows = _annotation_rows(data_dir)
    assert len(rows) == CALLS and {r[0] for r in rows} == {"label", "span"}  # no annotation lost
    with duckdb.connect(str(data_dir / "llm_cache.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM llm_calls").fetchone() == (CALLS,)
