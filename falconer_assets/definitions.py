"""Dagster definitions: tasks and corpus files as dynamic partitions, kept fresh by automation.

Lineage (``[t]``: partition of task ``t``; ``[t, f]``: task ``t`` x corpus file ``f``)::

    task_spec[t] -> plan[t] -+-> annotations[t] -> proxy_checkpoint[t] -+-> mined[t, f] <- corpus_files[f]
    <corpus>/corpus_sample --+                                          +-> eval[t]
    task_labels[t] ----------+

``task_spec``, ``task_labels`` and ``corpus_files`` are reported by sensors (see :mod:`falconer_assets.sensors`);
assets hand data to each other through the warehouse (``data/falconer.duckdb``) and the
checkpoint folders, not through an IO manager;
every asset reports a content-hash data version and re-runs only when a parent's data version
changes (:mod:`falconer_assets.automation`). See docs/lineage.md.

Environment (read when the code location loads):
    FALCONER_DATA_DIR       data folder with ``tasks/`` and ``corpora/`` (default ``data``)
    FALCONER_LLM_BASE_URL   OpenAI-compatible endpoint; unset = embedded llama.cpp server
    FALCONER_LLM_MODEL      model name (embedded default ``qwen2.5-coder-1.5b``)
    OPENAI_API_KEY          key for the endpoint (not needed for the embedded server)
    FALCONER_LLM_CONCURRENCY  LLM requests in flight during annotation (default: the embedded
                            server's slots, 8 for a remote endpoint)
    FALCONER_LLM_PARALLEL   request slots of the embedded server (llama.cpp ``--parallel``)
    FALCONER_EXECUTOR       ``ray`` mines on Ray Data (``RAY_ADDRESS``: a cluster), see ``mining_ray``
    FALCONER_PROXY_BASE     proxy base: unset = the NTE-pretrained metamodel, ``minilm``, ``mpnet``,
                            ``cuckoo``, or a hub id/path
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from falconer_assets.assets.annotations import annotations
from falconer_assets.assets.corpus_sample import corpus_sample_asset
from falconer_assets.assets.eval import eval_asset
from falconer_assets.assets.report import report
from falconer_assets.assets.keys import MINED, TASK_CHAIN, corpus_sample_key
from falconer_assets.assets.mined import mined
from falconer_assets.assets.plan import plan
from falconer_assets.assets.proxy_checkpoint import proxy_checkpoint
from falconer_assets.assets.sources import corpus_files, task_labels, task_spec
from falconer_assets.inputs.corpus import corpus_names
from falconer_assets.resources.llm import LLMResource
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets.resources.warehouse import WarehouseResource
from falconer_assets.resources.workspace import Workspace
from falconer_assets.sensors import MINE_JOB, build_sensors

TASK_CHAIN_JOB = "falconer_task_chain"
TASK_CHAIN_SELECTION = dg.AssetSelection.assets(*TASK_CHAIN)


def default_llm() -> LLMResource:
    """The LLM resource configured from the environment (see module docstring)."""
    base_url = os.environ.get("FALCONER_LLM_BASE_URL") or None
    kwargs = {"base_url": base_url}
    if os.environ.get("FALCONER_LLM_MODEL"):
        kwargs["model"] = os.environ["FALCONER_LLM_MODEL"]
    if base_url and os.environ.get("OPENAI_API_KEY"):
        kwargs["api_key"] = dg.EnvVar("OPENAI_API_KEY")
    for env, field in (("FALCONER_LLM_CONCURRENCY", "max_concurrency"), ("FALCONER_LLM_PARALLEL", "n_parallel")):
        if os.environ.get(env):
            try:
                kwargs[field] = int(os.environ[env])
            except ValueError:
                raise ValueError(f"{env} must be a whole number, got {os.environ[env]!r}") from None
    return LLMResource(**kwargs)


def build_definitions(
    data_dir: str | Path = "data",
    llm: dg.ConfigurableResource | None = None,
    proxy: ProxyResource | None = None,
) -> dg.Definitions:
    """Build the Falconer code location over ``data_dir``.

    Args:
        data_dir: folder with ``tasks/*.yaml`` and ``corpora/<corpus>/*.jsonl``; the warehouse
            ``falconer.duckdb``, LLM cache and checkpoints go there too. Tasks and corpus files
            are read at run time (dynamic partitions, :class:`Workspace`); only the list of
            corpora (one ``<corpus>/corpus_sample`` asset each, all parents of ``annotations``)
            is read here.
        llm: LLM resource (default: :func:`default_llm`).
        proxy: proxy resource (default: the metamodel base, checkpoints under ``<data_dir>/checkpoints``).
    """
    data_dir = Path(data_dir)
    corpora = corpus_names(data_dir / "corpora")
    samples = [corpus_sample_asset(c) for c in corpora]
    # which corpora exist is data, so annotations' dependency on their samples is added here
    annotations_def = annotations.map_asset_specs(
        lambda spec: spec.merge_attributes(deps=[corpus_sample_key(c) for c in corpora]))
    mine_job = dg.define_asset_job(MINE_JOB, selection=dg.AssetSelection.assets(MINED),
                                   description="mine one (task, corpus file) partition with the task's current proxy")
    chain_job = dg.define_asset_job(TASK_CHAIN_JOB, selection=TASK_CHAIN_SELECTION,
                                    description="one task: plan -> annotations -> proxy_checkpoint -> eval")
    sensors, schedules = build_sensors(data_dir, mine_job)
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
        assets=[task_spec, task_labels, corpus_files, *samples, plan, annotations_def, proxy_checkpoint, mined, eval_asset, report],
        jobs=[chain_job, mine_job],
        sensors=sensors,
        schedules=schedules,
        resources={
            "workspace": Workspace(data_dir=str(data_dir)),
            "llm": llm,
            "proxy": proxy,
            "warehouse": WarehouseResource(database=str(data_dir / "falconer.duckdb")),
        },
        executor=dg.in_process_executor,
    )


defs = build_definitions(os.environ.get("FALCONER_DATA_DIR", "data"))
