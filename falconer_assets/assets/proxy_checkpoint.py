"""Stage 3, proxy (paper 3.3/3.6): the ``proxy_checkpoint`` asset."""

import json
from collections import Counter
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.keys import ANNOTATIONS, PROXY_CHECKPOINT
from falconer_assets.assets.metadata import md_table
from falconer_assets.automation import on_change
from falconer_assets.partitions import TASKS
from falconer_assets.proxy.checkpoint import (
    checkpoint_problem,
    checkpoint_version,
    save_checkpoint,
    stored_version,
    training_examples,
)
from falconer_assets.proxy.health import heldout_collapse
from falconer_assets.proxy.model import NTEProxy
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets.resources.workspace import Workspace
from falconer_assets.warehouse.rows import annotation_set_version
from falconer_assets.warehouse.store import read_annotations

PROXY_RECIPE_VERSION = "1"
"""``code_version`` of ``proxy_checkpoint``: bump it when the training code or recipe changes in a way
that should retrain every task's proxy (the automation sensor then marks them all stale)."""

TRAINING_CURVE_FILE = "training_curve.json"
"""Written into the checkpoint folder after training: the dev score and loss per epoch (``NTEProxy.train``'s
``curve``), which the task report plots."""

NO_COLLAPSE = "no_collapse"
"""Name of the blocking check of ``proxy_checkpoint``; its verdict (``False`` on a conclusive collapse) is
also the materialization's metadata ``no_collapse``, which ``mined`` reads before mining with the checkpoint."""


@dg.asset(
    key=PROXY_CHECKPOINT,
    partitions_def=TASKS,
    deps=[ANNOTATIONS],
    code_version=PROXY_RECIPE_VERSION,
    automation_condition=on_change(),
    group_name="proxy",
    kinds={"pytorch"},
    check_specs=[dg.AssetCheckSpec(NO_COLLAPSE, asset=PROXY_CHECKPOINT, blocking=True,
                                   description="The proxy has not collapsed on the held-out annotations: it "
                                               "answers both yes and no where the annotator did, and finds spans "
                                               "where the annotator found some.")],
)
def proxy_checkpoint(context: dg.AssetExecutionContext, workspace: Workspace, proxy: ProxyResource,
                     warehouse: DuckDBResource):
    """The NTE proxy fine-tuned on the task's annotations (train split), saved in `<checkpoint_dir>/<task>`.

    Trains on the `train` split of the annotations only (15% of it as the dev split for early
    stopping); the `heldout` split is left for `eval`. Data version: annotation set version + base
    model + training recipe + code version; when the checkpoint folder already holds that version,
    training is skipped and the checkpoint reused (metadata `retrained: false`). With the `proxy`
    resource's `init_from_task` set (continual integration, paper 5.2) training starts from that
    task's checkpoint, and the earlier task's held-out score before and after is recorded. The folder is
    written atomically with a manifest of its files (sizes, SHA-256) written last; a folder that does not
    match its manifest (half-written, truncated, edited) is never reused: it is retrained (metadata
    `damaged_checkpoint` says why). With a dev
    split, the starting weights are scored first and training never returns weights that score worse
    (metadata `train_start_score`, `train_kept_start`).

    Blocking check `no_collapse` (also when the checkpoint is reused): the proxy runs on the held-out
    annotations of every sub-task; it fails when the proxy gives one answer to every held-out doc where
    the annotator gave both, or finds no span where the annotator found some. Its findings say what to
    do. With at least 5 held-out docs contradicting the one answer the collapse is conclusive: the check
    fails as an error, which blocks, and `mined` refuses the checkpoint (metadata `no_collapse`); with
    fewer it fails as a warning (a tiny held-out split cannot tell a collapse from bad luck).
    """
    task = workspace.task(context.partition_key)
    out = proxy.checkpoint_path(task.name)
    if proxy.init_from_task:
        if proxy.init_from_task == task.name:
            raise dg.Failure(f"init_from_task must name another task than {task.name!r}")
        base = str(proxy.checkpoint_path(proxy.init_from_task))
        base_inputs = {"init_from_task": proxy.init_from_task, "version": stored_version(base)}
        if Path(base).is_dir() and base_inputs["version"] is None:
            raise dg.Failure(f"init_from_task={proxy.init_from_task!r}: the checkpoint at {base} cannot be used "
                             f"({checkpoint_problem(base)}); re-materialize {proxy.init_from_task}/proxy_checkpoint")
    else:
        base = proxy.resolved_base_model()
        base_inputs = {"base_model": proxy.base_model or "metamodel", "resolved": Path(base).name}
    with warehouse.get_connection() as conn:
        rows = read_annotations(conn, task.name)
        earlier = read_annotations(conn, proxy.init_from_task, "heldout") if proxy.init_from_task else []
    version, inputs = checkpoint_version(annotation_set_version(rows), base_inputs, proxy.train_config(),
                                         PROXY_RECIPE_VERSION)
    metadata = {"path": dg.MetadataValue.path(str(out)), "checkpoint_version": version,
                "version_inputs": dg.MetadataValue.json(inputs)}
    docs = workspace.corpus(task.corpus).by_id
    current = stored_version(out)  # None: no folder, or one that does not match its manifest
    if current is None and out.exists():
        damaged = checkpoint_problem(out)
        context.log.warning(f"the checkpoint folder {out} is damaged or incomplete ({damaged}): retraining")
        metadata["damaged_checkpoint"] = damaged
    if current == version:
        context.log.info(f"annotations, base model and recipe unchanged (version {version}): "
                         f"reusing {out} without retraining")
        model = NTEProxy.load(str(out), device=proxy.resolved_device())
        check, health = _no_collapse(context, model, rows, docs, proxy.inference_batch_size)
        yield dg.MaterializeResult(metadata={**metadata, "retrained": False, **health},
                                   data_version=dg.DataVersion(version))
        yield check
        return

    train_rows = [r for r in rows if r.split == "train"]
    examples, skipped = training_examples(train_rows, docs)
    if not examples:
        raise dg.Failure(f"no training examples in the annotations of task {task.name!r}")
    if proxy.init_from_task and not Path(base).is_dir():
        raise dg.Failure(f"init_from_task={proxy.init_from_task!r}: no checkpoint at {base}; "
                         f"materialize {proxy.init_from_task}/proxy_checkpoint first")
    device = proxy.resolved_device()
    context.log.info(f"fine-tuning {base} on {len(examples)} examples on {device}")
    model = NTEProxy.load(base, device=device, seed=proxy.seed)
    earlier_examples = []
    if proxy.init_from_task:  # the earlier task's held-out annotations, to see whether the proxy forgets them
        earlier_docs = workspace.corpus(workspace.task(proxy.init_from_task).corpus).by_id
        earlier_examples, _ = training_examples(earlier, earlier_docs)
    before = model.evaluate(earlier_examples) if earlier_examples else None
    stats = model.train(examples, proxy.train_config(), log=context.log.info, progress_desc=f"train proxy {task.name}")
    if earlier_examples:
        metadata.update(_continual(context, proxy.init_from_task, before, model.evaluate(earlier_examples)))
    save_checkpoint(model, out, version, inputs)
    (out / TRAINING_CURVE_FILE).write_text(json.dumps(stats["curve"]))  # the task report's training curve
    check, health = _no_collapse(context, model, rows, docs, proxy.inference_batch_size)
    per_subtask = Counter((e.kind, e.instruction) for e in examples)
    yield dg.MaterializeResult(data_version=dg.DataVersion(version), metadata={
        **metadata,
        **health,
        "retrained": True,
        "base_model": base,
        "device": device,
        "train_docs": len({r.doc_id for r in train_rows}),
        "heldout_docs": len({r.doc_id for r in rows if r.split == "heldout"}),
        "train_examples": len(examples),
        "skipped_unparseable": skipped,
        "examples_per_sub_task": dg.MetadataValue.md(
            md_table(["kind", "instruction", "examples"], [[k, i, n] for (k, i), n in per_subtask.items()])),
        **{f"train_{k}": (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()
           if isinstance(v, (int, float)) and v == v},
        "training_curve": dg.MetadataValue.json(stats["curve"]),
    })
    yield check


def _no_collapse(context: dg.AssetExecutionContext, model: NTEProxy, rows, docs, batch_size: int):
    """The ``no_collapse`` check result and the materialization metadata of the same verdict.

    Any collapse fails the check; only a conclusive one (``proxy.health.MIN_COLLAPSE_EVIDENCE`` contradicted
    held-out docs) fails it with ``ERROR`` severity, which blocks downstream assets and sets the
    metadata ``no_collapse`` to ``False`` that ``mined`` reads. An inconclusive one is a ``WARN``.
    """
    collapses, summary = heldout_collapse(
        rows, docs, lambda texts, q: model.get_label(texts, q, batch_size=batch_size),
        lambda texts, q: model.get_span(texts, q, batch_size=batch_size))
    findings = [c.finding for c in collapses]
    conclusive = any(c.conclusive for c in collapses)
    for finding in findings:
        context.log.warning(finding)
    table = dg.MetadataValue.md(md_table(
        ["kind", "instruction", "held-out docs", "annotator: yes / spans", "proxy: yes / spans"],
        [list(s.values()) for s in summary]))
    check = dg.AssetCheckResult(
        check_name=NO_COLLAPSE, asset_key=PROXY_CHECKPOINT, passed=not collapses,
        severity=dg.AssetCheckSeverity.ERROR if conclusive else dg.AssetCheckSeverity.WARN,
        description=" ".join(findings) if findings else None,
        metadata={"findings": dg.MetadataValue.json(findings), "heldout_sub_tasks": table,
                  "conclusive": conclusive})
    return check, {NO_COLLAPSE: not conclusive, "collapse_findings": dg.MetadataValue.json(findings)}


def _continual(context: dg.AssetExecutionContext, earlier_task: str, before: dict, after: dict) -> dict:
    """Metadata of continual integration: the earlier task's held-out scores before and after training."""
    context.log.info(f"earlier task {earlier_task}: held-out score {before['score']:.3f} -> {after['score']:.3f}")
    return {
        "continual_from": earlier_task,
        "continual_earlier_heldout": dg.MetadataValue.md(md_table(
            ["metric", "before", "after"],
            [[k, round(before[k], 4), round(after[k], 4)] for k in ("score", "span_f1", "label_f1") if k in after])),
        "continual_earlier_score_before": round(before["score"], 4),
        "continual_earlier_score_after": round(after["score"], 4),
    }
