"""Stage 3, proxy (paper 3.3/3.6): one NTE token classifier fine-tuned on all sub-tasks' annotations."""


import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.common import annotation_rows, load_corpus, md_table, spans_from_json
from falconer_assets.core.proxy import NTEProxy, TrainExample
from falconer_assets.core.tasks import Task
from falconer_assets.resources.proxy import ProxyResource


def build_proxy_checkpoint_asset(task: Task, data_dir) -> dg.AssetsDefinition:
    """The ``<task>/proxy_checkpoint`` asset: path (``str``) of the fine-tuned proxy directory.

    Trains on the ``train`` split of the annotations only; the ``heldout`` split is left for
    ``eval``. Both split sizes are recorded in the metadata.
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
        examples, skipped = [], 0
        for kind, instruction, doc_id, label, spans, parse_ok in rows:
            if doc_id not in docs or (kind == "label" and not parse_ok):
                skipped += 1
                continue
            if kind == "label":
                examples.append(TrainExample("label", docs[doc_id], instruction, label=bool(label)))
            else:
                examples.append(TrainExample("span", docs[doc_id], instruction, spans=spans_from_json(spans)))
        if not examples:
            raise dg.Failure(f"no training examples in the annotations of task {task.name!r}")
        base, device = proxy.resolved_base_model(), proxy.resolved_device()
        context.log.info(f"fine-tuning {base} on {len(examples)} examples on {device}")
        model = NTEProxy.load(base, device=device, seed=proxy.seed)
        stats = model.train(examples, proxy.train_config(), log=context.log.info)
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
               if isinstance(v, (int, float))},
        })
        return str(out)

    return proxy_checkpoint
