"""Stage 3, proxy (paper 3.3/3.6): one NTE token classifier fine-tuned on all sub-tasks' annotations."""


import json
import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.common import annotation_rows, load_corpus, md_table, spans_from_json, task_for_partition
from falconer_assets.automation import on_change
from falconer_assets.proxy.model import NTEProxy, TrainExample
from falconer_assets.versions import annotation_set_version, digest
from falconer_assets.partitions import TASKS
from falconer_assets.resources.proxy import ProxyResource

PROXY_RECIPE_VERSION = "1"
"""``code_version`` of ``proxy_checkpoint``: bump it when the training code or recipe changes in a way
that should retrain every task's proxy (the automation sensor then marks them all stale)."""

VERSION_FILE = "falconer_version.json"
"""Written into each checkpoint folder: the data version it was trained for."""


def checkpoint_version(conn, task_name: str, proxy: ProxyResource) -> tuple[str, dict]:
    """Data version of a task's proxy checkpoint, and what went into it.

    ``digest`` of the task's annotation set version (same function as the ``annotations``
    asset), the base model (name and resolved path, or the earlier task's checkpoint version
    for continual integration), the training recipe (:meth:`ProxyResource.train_config`) and
    :data:`PROXY_RECIPE_VERSION`. Equal versions mean training would see exactly the same
    inputs, so the existing checkpoint is reused instead of retrained.
    """
    cur = conn.execute("SELECT kind, instruction, doc_id, split, label, spans FROM annotations WHERE task = ?",
                       [task_name])
    rows = [dict(zip(("kind", "instruction", "doc_id", "split", "label", "spans"), r)) for r in cur.fetchall()]
    if proxy.init_from_task:
        earlier = Path(proxy.checkpoint_dir) / proxy.init_from_task / VERSION_FILE
        base = {"init_from_task": proxy.init_from_task,
                "version": json.loads(earlier.read_text())["version"] if earlier.exists() else None}
    else:
        base = {"base_model": proxy.base_model or "metamodel", "resolved": Path(proxy.resolved_base_model()).name}
    inputs = {"annotations": annotation_set_version(rows), "base": base,
              "recipe": proxy.train_config().__dict__, "code_version": PROXY_RECIPE_VERSION}
    return digest(inputs), inputs


def build_proxy_checkpoint_asset(data_dir) -> dg.AssetsDefinition:
    """The ``proxy_checkpoint`` asset (one partition per task): path (``str``) of the fine-tuned proxy.

    Data version: :func:`checkpoint_version`. When the checkpoint folder already holds that
    version (same annotations, base model and recipe), training is skipped and the checkpoint
    reused (metadata ``retrained: false``).

    Trains on the ``train`` split of the annotations only (15% of it as the dev split for
    early stopping); the ``heldout`` split is left for ``eval``. Both split sizes are
    recorded in the metadata. With ``ProxyResource.init_from_task`` set (continual
    integration, paper 5.2) training starts from that task's checkpoint, and the earlier
    task's held-out score before and after is recorded (does the proxy forget?).
    """
    key = dg.AssetKey("proxy_checkpoint")

    @dg.asset(
        key=key,
        partitions_def=TASKS,
        deps=[dg.AssetKey("annotations")],
        code_version=PROXY_RECIPE_VERSION,
        automation_condition=on_change(),
        group_name="proxy",
        kinds={"pytorch"},
        description="NTE proxy fine-tuned on the task's LLM annotations (train split)",
    )
    def proxy_checkpoint(context: dg.AssetExecutionContext, proxy: ProxyResource, warehouse: DuckDBResource):
        task = task_for_partition(data_dir, context.partition_key)
        out = Path(proxy.checkpoint_dir) / task.name
        with warehouse.get_connection() as conn:
            version, inputs = checkpoint_version(conn, task.name, proxy)
        stored = out / VERSION_FILE
        if stored.exists() and json.loads(stored.read_text()).get("version") == version:
            context.log.info(f"annotations, base model and recipe unchanged (version {version}): "
                             f"reusing {out} without retraining")
            return dg.Output(str(out), data_version=dg.DataVersion(version), metadata={
                "path": dg.MetadataValue.path(str(out)), "retrained": False, "checkpoint_version": version,
                "version_inputs": dg.MetadataValue.json(inputs)})
        docs = {d.id: d.text for d in load_corpus(data_dir, task.corpus)[0]}
        with warehouse.get_connection() as conn:
            rows = annotation_rows(conn, task.name, "train")
            n_heldout = conn.execute(
                "SELECT count(DISTINCT doc_id) FROM annotations WHERE task = ? AND split = 'heldout'", [task.name]
            ).fetchone()[0]
        examples, skipped = _examples(rows, docs)
        if not examples:
            raise dg.Failure(f"no training examples in the annotations of task {task.name!r}")
        device = proxy.resolved_device()
        earlier = None
        if proxy.init_from_task:
            if proxy.init_from_task == task.name:
                raise dg.Failure(f"init_from_task must name another task than {task.name!r}")
            base = str(Path(proxy.checkpoint_dir) / proxy.init_from_task)
            if not Path(base).is_dir():
                raise dg.Failure(f"init_from_task={proxy.init_from_task!r}: no checkpoint at {base}; "
                                 f"materialize {proxy.init_from_task}/proxy_checkpoint first")
            with warehouse.get_connection() as conn:
                earlier = _heldout_examples(conn, data_dir, proxy.init_from_task)
        else:
            base = proxy.resolved_base_model()
        context.log.info(f"fine-tuning {base} on {len(examples)} examples on {device}")
        model = NTEProxy.load(base, device=device, seed=proxy.seed)
        before = model.evaluate(earlier) if earlier else None
        stats = model.train(examples, proxy.train_config(), log=context.log.info)
        continual = {}
        if earlier:
            after = model.evaluate(earlier)
            continual = {
                "continual_from": proxy.init_from_task,
                "continual_earlier_heldout": dg.MetadataValue.md(md_table(
                    ["metric", "before", "after"],
                    [[k, round(before[k], 4), round(after[k], 4)]
                     for k in ("score", "span_f1", "label_f1") if k in after])),
                "continual_earlier_score_before": round(before["score"], 4),
                "continual_earlier_score_after": round(after["score"], 4),
            }
            context.log.info(f"earlier task {proxy.init_from_task}: held-out score "
                             f"{before['score']:.3f} -> {after['score']:.3f}")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp)
        (tmp / VERSION_FILE).write_text(json.dumps({"version": version, "inputs": inputs}, indent=1, default=str))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        per_subtask = Counter((e.kind, e.instruction) for e in examples)
        n_train_docs = len({r[2] for r in rows})
        return dg.Output(str(out), data_version=dg.DataVersion(version), metadata={
            "path": dg.MetadataValue.path(str(out)),
            "retrained": True,
            "checkpoint_version": version,
            "version_inputs": dg.MetadataValue.json(inputs),
            "base_model": base,
            "device": device,
            "train_docs": n_train_docs,
            "heldout_docs": int(n_heldout),
            "train_examples": len(examples),
            "skipped_unparseable": skipped,
            "examples_per_sub_task": dg.MetadataValue.md(
                md_table(["kind", "instruction", "examples"], [[k, i, n] for (k, i), n in per_subtask.items()])),
            **{f"train_{k}": (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()
               if isinstance(v, (int, float)) and v == v},
            **continual,
        })

    return proxy_checkpoint


def _examples(rows, docs: dict[str, str]) -> tuple[list[TrainExample], int]:
    """Annotation rows -> proxy examples; rows of unknown docs or unparseable labels are skipped."""
    out, skipped = [], 0
    for kind, instruction, doc_id, label, spans, parse_ok in rows:
        if doc_id not in docs or (kind == "label" and not parse_ok):
            skipped += 1
        elif kind == "label":
            out.append(TrainExample("label", docs[doc_id], instruction, label=bool(label)))
        else:
            out.append(TrainExample("span", docs[doc_id], instruction, spans=spans_from_json(spans)))
    return out, skipped


def _heldout_examples(conn, data_dir, task_name: str) -> list[TrainExample]:
    """The held-out annotations of another task as gold examples (continual integration)."""
    task = task_for_partition(data_dir, task_name)
    docs = {d.id: d.text for d in load_corpus(data_dir, task.corpus)[0]}
    return _examples(annotation_rows(conn, task_name, "heldout"), docs)[0]
