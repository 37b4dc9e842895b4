"""Dagster definitions: one asset chain per task file, one sample asset per corpus.

Lineage (per task ``T`` over corpus ``C``)::

    T/plan ──┐
             ├─> T/annotations ─> T/proxy_checkpoint ─┬─> T/mined
    C/corpus_sample ┘                                 └─> T/eval

Environment (read when the code location loads):
    FALCONER_DATA_DIR       data folder with ``tasks/`` and ``corpora/`` (default ``data``)
    FALCONER_LLM_BASE_URL   OpenAI-compatible endpoint; unset = embedded llama.cpp server
    FALCONER_LLM_MODEL      model name (embedded default ``qwen2.5-coder-1.5b``)
    OPENAI_API_KEY          key for the endpoint (not needed for the embedded server)
    FALCONER_PROXY_BASE     proxy base: unset = the NTE-pretrained metamodel, ``minilm``, ``mpnet``,
                            ``cuckoo``, or a hub id/path
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.evaluation import build_eval_asset
from falconer_assets.assets.generator import build_annotations_asset, build_corpus_sample_asset
from falconer_assets.assets.mining import build_mined_asset
from falconer_assets.assets.planner import build_plan_asset
from falconer_assets.assets.proxy import build_proxy_checkpoint_asset
from falconer_assets.core.tasks import load_tasks
from falconer_assets.resources.llm import LLMResource
from falconer_assets.resources.proxy import ProxyResource

MAIN_JOB = "falconer_main"


def default_llm() -> LLMResource:
    """The LLM resource configured from the environment (see module docstring)."""
    base_url = os.environ.get("FALCONER_LLM_BASE_URL") or None
    kwargs = {"base_url": base_url}
    if os.environ.get("FALCONER_LLM_MODEL"):
        kwargs["model"] = os.environ["FALCONER_LLM_MODEL"]
    if base_url and os.environ.get("OPENAI_API_KEY"):
        kwargs["api_key"] = dg.EnvVar("OPENAI_API_KEY")
    return LLMResource(**kwargs)


def build_definitions(
    data_dir: str | Path = "data",
    llm: dg.ConfigurableResource | None = None,
    proxy: ProxyResource | None = None,
) -> dg.Definitions:
    """Build the Falconer code location for the tasks in ``<data_dir>/tasks``.

    Args:
        data_dir: folder with ``tasks/*.yaml`` and ``corpora/*.jsonl``; the warehouse
            ``falconer.duckdb``, LLM cache, checkpoints and IO-manager storage go there too.
        llm: LLM resource (default: :func:`default_llm`).
        proxy: proxy resource (default: offline MiniLM, checkpoints under ``<data_dir>/checkpoints``).

    Raises:
        falconer_assets.core.tasks.TaskError: a task file is malformed (names the file).
    """
    data_dir = Path(data_dir)
    tasks = load_tasks(data_dir / "tasks")
    assets: list[dg.AssetsDefinition] = []
    for corpus in sorted({t.corpus for t in tasks}):
        assets.append(build_corpus_sample_asset(corpus, data_dir))
    for task in tasks:
        assets += [
            build_plan_asset(task),
            build_annotations_asset(task, data_dir),
            build_proxy_checkpoint_asset(task, data_dir),
            build_mined_asset(task, data_dir),
            build_eval_asset(task, data_dir),
        ]
    if proxy is None:
        proxy = ProxyResource(
            base_model=os.environ.get("FALCONER_PROXY_BASE", ""),
            checkpoint_dir=str(data_dir / "checkpoints"),
        )
    if llm is None:
        llm = default_llm()
        if not llm.base_url and llm.cache_path == "data/llm_cache.duckdb":
            llm = llm.model_copy(update={"cache_path": str(data_dir / "llm_cache.duckdb")})
    return dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job(MAIN_JOB, selection=dg.AssetSelection.all(),
                                  description="instruction -> plan -> sample -> annotations -> proxy -> mined -> eval, all tasks")],
        resources={
            "llm": llm,
            "proxy": proxy,
            "warehouse": DuckDBResource(database=str(data_dir / "falconer.duckdb")),
            "io_manager": dg.FilesystemIOManager(base_dir=str(data_dir / "dagster_storage")),
        },
        executor=dg.in_process_executor,
    )


defs = build_definitions(os.environ.get("FALCONER_DATA_DIR", "data"))
