"""Stage 3, proxy (paper 3.3/3.6): one NTE token classifier fine-tuned on all sub-tasks' annotations."""


import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.common import annotation_rows, load_corpus, md_table, spans_from_json
from falconer_assets.core.proxy import NTEProxy, TrainExample
from falconer_assets.core.tasks import Task, load_tasks
from falconer_assets.resources.proxy import ProxyResource


def build_proxy_checkpoint_asset(task: Task, data_dir) -> dg.AssetsDefinition:
    """The ``<task>/proxy_checkpoint`` asset: path (``str``) of the fine-tuned proxy directory.

    Trains on the ``train`` split of the annotations only (15% of it as the dev split for
    early stopping); the ``heldout`` split is left for ``eval``. Both split sizes are
    recorded in the metadata. With ``ProxyResource.init_from_task`` set (continual
    integration, paper 5.2) training starts from that task's checkpoint, and the earlier
    task's held-out score before and after is recorded (does the proxy forget?).
    """
    key = dg.AssetKey([task.name, "proxy_checkpoint"])

    @dg.asset(
        key=key,
        deps=[dg.AssetKey([task.name, "annotations"])],
        group_name="proxy",
        kinds={"pytorch"},
        description="NTE proxy fine-tuned on the task's LLM annotations (train split)",
    )
    def proxy_checkpoint(context: dg.AssetExecutionContext, proxy: ProxyResource, warehouse: DuckDBResource) -> str:
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
        out = Path(proxy.checkpoint_dir) / task.name
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        per_subtask = Counter((e.kind, e.instruction) for e in examples)
        n_train_docs = len({r[2] for r in rows})
        context.add_output_metadata({
            "path": dg.MetadataValue.path(str(out)),
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
        return str(out)

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
    tasks = {t.name: t for t in load_tasks(Path(data_dir) / "tasks")}
    if task_name not in tasks:
        raise dg.Failure(f"init_from_task={task_name!r} is not a task in {data_dir}/tasks")
    docs = {d.id: d.text for d in load_corpus(data_dir, tasks[task_name].corpus)[0]}
    return _examples(annotation_rows(conn, task_name, "heldout"), docs)[0]
