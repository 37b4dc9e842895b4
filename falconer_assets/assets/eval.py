"""Stage 5, eval (paper 4.2): proxy vs annotator on the held-out slice, and proxy vs LLM speed."""


import dataclasses
import time
from collections import defaultdict
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.common import (
    annotation_rows,
    load_corpus,
    md_table,
    parse_plan,
    spans_from_json,
    task_for_partition,
)
from falconer_assets.automation import on_change
from falconer_assets.metrics import score_label_subtask, score_span_subtask
from falconer_assets.llm.executor import LLMPrimitives
from falconer_assets.plan.sandbox import run_plan
from falconer_assets.proxy.model import NTEProxy
from falconer_assets.warehouse.tables import replace_rows
from falconer_assets.versions import rows_version
from falconer_assets.partitions import TASKS
from falconer_assets.resources.llm import LLMResource
from falconer_assets.resources.proxy import ProxyResource


class EvalConfig(dg.Config):
    """``speed_docs``: held-out documents on which the proxy and the LLM both run the plan."""

    speed_docs: int = 20


def build_eval_asset(data_dir) -> dg.AssetsDefinition:
    """The ``eval`` asset (one partition per task): per sub-task agreement metrics and a docs/s comparison.

    Metrics (rows of ``eval_metrics``): label precision/recall/F1 for label sub-tasks; seqeval
    exact span P/R/F1 and word-level P/R/F1 for span sub-tasks, proxy against the annotator on
    the held-out split. Speed (rows of ``throughput``): the plan run by the proxy and by the LLM
    on the same ``speed_docs`` held-out documents; the LLM time is the sum of the original call
    latencies (recorded in the LLM cache, so a cached re-run reports the real cost). Data version:
    hash of the metric rows.
    """
    key = dg.AssetKey("eval")

    @dg.asset(
        key=key,
        partitions_def=TASKS,
        ins={"plan": dg.AssetIn(dg.AssetKey("plan")), "proxy_checkpoint": dg.AssetIn(dg.AssetKey("proxy_checkpoint"))},
        deps=[dg.AssetKey("annotations")],
        automation_condition=on_change(),
        group_name="eval",
        kinds={"duckdb"},
        description="Proxy vs annotator F1 on held-out samples; proxy vs LLM docs/s",
    )
    def evaluation(context: dg.AssetExecutionContext, config: EvalConfig, plan: str, proxy_checkpoint: str,
             proxy: ProxyResource, llm: LLMResource, warehouse: DuckDBResource) -> dg.MaterializeResult:
        task = task_for_partition(data_dir, context.partition_key)
        validated = parse_plan(plan, f"plan[{task.name}]")
        docs = {d.id: d.text for d in load_corpus(data_dir, task.corpus)[0]}
        with warehouse.get_connection() as conn:
            rows = annotation_rows(conn, task.name, "heldout")
        by_subtask = defaultdict(list)
        for kind, instruction, doc_id, label, spans, parse_ok in rows:
            if doc_id in docs and (kind == "span" or parse_ok):
                by_subtask[(kind, instruction)].append((doc_id, label, spans))
        if not by_subtask:
            raise dg.Failure(f"task {task.name!r} has no held-out annotations to evaluate on")
        model = NTEProxy.load(proxy_checkpoint, device=proxy.resolved_device())
        scores = []
        for (kind, instruction), items in by_subtask.items():
            texts = [docs[d] for d, _, _ in items]
            if kind == "label":
                scores.append(score_label_subtask(instruction, [bool(l) for _, l, _ in items],
                                                  model.get_label(texts, instruction)))
            else:
                scores.append(score_span_subtask(instruction, texts, [spans_from_json(s) for _, _, s in items],
                                                 model.get_span(texts, instruction)))

        heldout_ids = sorted({d for items in by_subtask.values() for d, _, _ in items})[: config.speed_docs]
        texts = [docs[d] for d in heldout_ids]
        t0 = time.perf_counter()
        run_plan(validated, texts, model.get_label, model.get_span)
        proxy_s = time.perf_counter() - t0
        llm_exec = LLMPrimitives(lambda messages: llm.chat(messages))
        run_plan(validated, texts, llm_exec.get_label, llm_exec.get_span)
        llm_s = llm_exec.llm_seconds
        speed = [("proxy", proxy_s, 0), ("llm", llm_s, llm_exec.tokens)]

        metric_rows = [{"task": task.name, "kind": s.kind, "instruction": s.instruction, "n": s.n,
                        "metric": m, "value": float(v)} for s in scores for m, v in s.metrics.items()]
        with warehouse.get_connection() as conn:
            replace_rows(conn, "eval_metrics", "task", task.name, metric_rows)
            conn.execute("DELETE FROM throughput WHERE task = ? AND executor IN ('proxy', 'llm')", [task.name])
            for name, secs, tokens in speed:
                conn.execute("INSERT INTO throughput VALUES (?, ?, ?, ?, ?, ?)",
                             [task.name, name, len(texts), secs, len(texts) / secs if secs > 0 else 0.0, tokens])

        table = []
        for s in scores:
            m = s.metrics
            if s.kind == "label":
                table.append([s.kind, s.instruction, s.n, m["label_precision"], m["label_recall"], m["label_f1"], "", ""])
            else:
                table.append([s.kind, s.instruction, s.n, m["span_precision"], m["span_recall"], m["span_f1"],
                              m["word_f1"], int(m["gold_spans"])])
        speed_md = md_table(["executor", "docs", "seconds", "docs/s", "tokens"],
                            [[n, len(texts), round(sec, 2), round(len(texts) / sec, 2) if sec else 0.0, tok]
                             for n, sec, tok in speed])
        label_f1 = [s.metrics["label_f1"] for s in scores if s.kind == "label"]
        span_f1 = [s.metrics["span_f1"] for s in scores if s.kind == "span"]
        word_f1 = [s.metrics["word_f1"] for s in scores if s.kind == "span"]
        mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
        metadata = {
            "metrics": dg.MetadataValue.md(md_table(
                ["kind", "instruction", "heldout docs", "precision", "recall", "F1 (label / span exact)",
                 "word F1", "gold spans"], table)),
            "speed": dg.MetadataValue.md(speed_md),
            "proxy_docs_per_s": round(len(texts) / proxy_s, 2) if proxy_s else 0.0,
            "llm_docs_per_s": round(len(texts) / llm_s, 3) if llm_s else 0.0,
            "speedup": round(llm_s / proxy_s, 1) if proxy_s else 0.0,
        }
        metadata.update(_learning_curve(task.corpus))
        for name, value in (("mean_label_f1", mean(label_f1)), ("mean_span_f1", mean(span_f1)),
                            ("mean_word_f1", mean(word_f1))):
            if value is not None:
                metadata[name] = value
        version = rows_version([(r["kind"], r["instruction"], r["metric"], round(r["value"], 6)) for r in metric_rows])
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))

    return evaluation


BENCH_DIR = Path(__file__).resolve().parents[2] / "docs" / "bench"


def _learning_curve(corpus: str) -> dict:
    """The ``bench quality`` learning curve of the benchmark dataset matching ``corpus``.

    The benchmark dataset is the corpus name's first ``_`` word (``debian_packages`` ->
    ``debian``); returns ``{}`` when the benchmark has no such panel yet. Metadata: the PNG
    path and that dataset's rows of the benchmark table (from ``quality.json``).
    """
    from falconer_assets.bench import quality as qb

    dataset = corpus.split("_")[0]
    png, results = BENCH_DIR / f"quality_{dataset}.png", BENCH_DIR / "quality.json"
    if not png.is_file() or not results.is_file():
        return {}
    plan = dataclasses.replace(qb.FULL, datasets=(dataset,))
    rows = qb.run(plan, results, log=lambda m: None, train=False)
    if not rows:
        return {}
    table = qb.markdown_table(rows, plan)
    return {
        "learning_curve_plot": dg.MetadataValue.path(str(png)),
        "learning_curve": dg.MetadataValue.md(
            f"Proxy F1 vs training samples on gold-labelled `{dataset}` data "
            f"(`python -m falconer_assets.bench quality`, plot: `{png}`)\n\n{table}"),
    }
