"""Stage 5, eval (paper 4.2): the ``eval`` asset, proxy vs annotator on the held-out slice, proxy vs LLM speed."""

import time
from collections import defaultdict

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.keys import ANNOTATIONS, EVAL, PLAN, PROXY_CHECKPOINT
from falconer_assets.assets.metadata import md_table
from falconer_assets.automation import on_change
from falconer_assets.cascade.bands import heldout_quality
from falconer_assets.llm.executor import LLMPrimitives
from falconer_assets.metrics import SubtaskScore, score_label_subtask, score_span_subtask
from falconer_assets.partitions import TASKS
from falconer_assets.plan.worker import run_plan_isolated as run_plan  # the plan is untrusted: its limited worker
from falconer_assets.proxy.checkpoint import checkpoint_problem
from falconer_assets.proxy.model import NTEProxy
from falconer_assets.resources.llm import LLMResource
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets.resources.workspace import Workspace
from falconer_assets.versions import rows_version
from falconer_assets.warehouse.rows import AnnotationRow, MetricRow, Throughput
from falconer_assets.warehouse.store import read_annotations, write_eval


class EvalConfig(dg.Config):
    """``speed_docs``: held-out documents on which the proxy and the LLM both run the plan."""

    speed_docs: int = 20


@dg.asset(
    key=EVAL,
    partitions_def=TASKS,
    deps=[PLAN, PROXY_CHECKPOINT, ANNOTATIONS],
    automation_condition=on_change(),
    group_name="eval",
    kinds={"duckdb"},
)
def eval_asset(context: dg.AssetExecutionContext, config: EvalConfig, workspace: Workspace, proxy: ProxyResource,
                 llm: LLMResource, warehouse: DuckDBResource) -> dg.MaterializeResult:
    """Proxy vs annotator F1 on the held-out annotations, and proxy vs LLM docs/s on the same plan.

    Metrics (rows of `eval_metrics`): label precision/recall/F1 for label sub-tasks; seqeval exact
    span P/R/F1 and word-level P/R/F1 for span sub-tasks, proxy against the annotator on the held-out
    split. Each F1 also has the rows `<f1>_low` and `<f1>_high`: its 95% bootstrap interval over the
    held-out documents (1,000 resamples of whole documents, seed 0). When `annotations` enlarged the
    held-out split with docs of the high-score stratum, every count is weighted by the doc's stratum
    weight, so the F1 estimates the corpus' (an unweighted F1 over the enlarged split would overstate
    the share of positives); `n` counts every held-out doc. Read `F1 [low, high]` in the
    table with its n (held-out docs; gold positives or spans): the held-out split is small, so the
    proxy's F1 on more documents like these is plausibly anywhere in the interval, and two F1s
    whose intervals overlap widely are not shown to differ. Speed (rows of `throughput`): the plan
    run by the proxy and by the LLM on the same `speed_docs` held-out documents; the LLM time is the
    sum of the original call latencies (recorded in the LLM cache, so a cached re-run reports the
    real cost). With a `quality:` block, also the cascade per sub-task: the target, the value it
    achieves on the held-out split cross-fitted (bands calibrated on one half, measured on the
    other) and the share of held-out documents it sends to the LLM (metric rows `cascade_*`).
    Data version: hash of the metric rows (the interval rows included).
    """
    task = workspace.task(context.partition_key)
    docs = workspace.corpus(task.corpus).by_id
    with warehouse.get_connection() as conn:
        plan = workspace.plan(conn, task.name)
        heldout = [r for r in read_annotations(conn, task.name, "heldout") if r.doc_id in docs and r.usable]
    by_subtask: dict[tuple[str, str], list[AnnotationRow]] = defaultdict(list)
    for r in heldout:
        by_subtask[r.sub_task].append(r)
    if not by_subtask:
        raise dg.Failure(f"task {task.name!r} has no held-out annotations to evaluate on")
    problem = checkpoint_problem(proxy.checkpoint_path(task.name))
    if problem is not None:  # never load a half-written or truncated checkpoint
        raise dg.Failure(f"the proxy checkpoint of task {task.name!r} cannot be used: {problem}. Re-materialize "
                         f"{task.name}/proxy_checkpoint (it retrains a damaged checkpoint).")
    model = NTEProxy.load(str(proxy.checkpoint_path(task.name)), device=proxy.resolved_device(),
                          precision=proxy.inference_precision)  # the precision mined runs at
    scores = [_score(model, kind, instruction, items, docs) for (kind, instruction), items in by_subtask.items()]

    texts = [docs[d].text for d in sorted({r.doc_id for r in heldout})[: config.speed_docs]]
    t0 = time.perf_counter()
    run_plan(plan, texts, model.get_label, model.get_span)
    speed = [Throughput("proxy", len(texts), time.perf_counter() - t0)]
    llm_exec = LLMPrimitives(llm.chat)
    run_plan(plan, texts, llm_exec.get_label, llm_exec.get_span)
    speed.append(Throughput("llm", len(texts), llm_exec.llm_seconds, llm_exec.tokens))

    metric_rows = [MetricRow(s.kind, s.instruction, s.n, m, float(v)) for s in scores for m, v in s.metrics.items()]
    cascade = []
    if task.quality is not None:  # the cascade's target and what it achieves on held-out data, cross-fitted
        cascade = heldout_quality(model, heldout, docs, [(c.kind, c.instruction) for c in plan.calls], task.quality)
        metric_rows += [MetricRow(c["kind"], c["instruction"], c["n"], f"cascade_{m}", float(v)) for c in cascade
                        for m, v in (("target", task.quality.value), ("achieved", _achieved(c)),
                                     ("llm_share", c["llm_share"]))]
    with warehouse.get_connection() as conn:
        write_eval(conn, task.name, metric_rows, speed)
    version = rows_version([(r.kind, r.instruction, r.metric, round(r.value, 6)) for r in metric_rows])
    metadata = _metadata(scores, speed)
    metadata["inference_precision"] = model.precision
    if cascade:
        metadata["cascade"] = dg.MetadataValue.md(md_table(
            ["kind", "instruction", "held-out docs", "target", "achieved (cross-fitted)", "share to LLM", "certified"],
            [[c["kind"], c["instruction"], c["n"], f"{c['target']} >= {c['value']}", round(_achieved(c), 3),
              round(c["llm_share"], 3), c["guaranteed"]] for c in cascade]))
        metadata["cascade_llm_share"] = round(sum(c["llm_share"] for c in cascade) / len(cascade), 4)
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))


def _achieved(c: dict) -> float:
    """The measure the target is about: span agreement, or the label's recall / precision (NaN -> 1.0:
    nothing to miss)."""
    x = c["agreement"] if c["kind"] == "span" else c[c["target"]]
    return 1.0 if x != x else float(x)


def _score(model: NTEProxy, kind: str, instruction: str, items: list[AnnotationRow], docs) -> SubtaskScore:
    """The proxy's answers to one sub-task on its held-out docs, scored against the annotator's, each doc
    counted with its stratum weight (all 1 when the held-out split was not enlarged)."""
    texts = [docs[r.doc_id].text for r in items]
    weights = [r.weight for r in items] if any(r.weight != 1.0 for r in items) else None
    if kind == "label":
        return score_label_subtask(instruction, [bool(r.label) for r in items], model.get_label(texts, instruction),
                                   weights)
    return score_span_subtask(instruction, texts, [list(r.spans) for r in items], model.get_span(texts, instruction),
                              weights)


def _f1_cell(m: dict[str, float], name: str) -> str:
    """``"F1 [low, high]"`` of metric ``name`` (2 decimals: the interval makes a third meaningless)."""
    return f"{m[name]:.2f} [{m[name + '_low']:.2f}, {m[name + '_high']:.2f}]"


def _metadata(scores: list[SubtaskScore], speed: list[Throughput]) -> dict:
    """The web UI's eval tables (F1s with their 95% intervals), per-kind mean F1s and the proxy/LLM
    speed comparison."""
    table = []
    for s in scores:
        m = s.metrics
        if s.kind == "label":
            table.append([s.kind, s.instruction, s.n, int(m["gold_positive"]), f"{m['label_precision']:.2f}",
                          f"{m['label_recall']:.2f}", _f1_cell(m, "label_f1"), ""])
        else:
            table.append([s.kind, s.instruction, s.n, int(m["gold_spans"]), f"{m['span_precision']:.2f}",
                          f"{m['span_recall']:.2f}", _f1_cell(m, "span_f1"), _f1_cell(m, "word_f1")])
    proxy_speed, llm_speed = speed
    metadata = {
        "metrics": dg.MetadataValue.md(md_table(
            ["kind", "instruction", "n (heldout docs)", "gold positives / spans", "precision", "recall",
             "F1 [95% CI] (label / span exact)", "word F1 [95% CI]"], table)),
        "speed": dg.MetadataValue.md(md_table(
            ["executor", "docs", "seconds", "docs/s", "tokens"],
            [[t.executor, t.docs, round(t.seconds, 2), round(t.docs_per_s, 2), t.tokens] for t in speed])),
        "proxy_docs_per_s": round(proxy_speed.docs_per_s, 2),
        "llm_docs_per_s": round(llm_speed.docs_per_s, 3),
        "speedup": round(llm_speed.seconds / proxy_speed.seconds, 1) if proxy_speed.seconds else 0.0,
    }
    for name, kind, metric in (("mean_label_f1", "label", "label_f1"), ("mean_span_f1", "span", "span_f1"),
                               ("mean_word_f1", "span", "word_f1")):
        values = [s.metrics[metric] for s in scores if s.kind == kind]
        if values:
            metadata[name] = round(sum(values) / len(values), 4)
    return metadata
