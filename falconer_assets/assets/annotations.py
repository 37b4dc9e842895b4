"""Stage 2b, generator (paper 3.5, Appendix B): the ``annotations`` asset."""

import time

import dagster as dg
import openai
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.keys import ANNOTATIONS, PLAN, TASK_LABELS
from falconer_assets.assets.metadata import md_table
from falconer_assets.automation import on_change
from falconer_assets.generator.annotate import AnnotationResult, LabelHeuristic, annotate_sub_tasks
from falconer_assets.generator.sampling import LABEL_REASONS
from falconer_assets.llm.embedded import LlamaServerError
from falconer_assets.partitions import TASKS
from falconer_assets.proxy.model import NTEProxy
from falconer_assets.resources.llm import LLMResource
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets.resources.workspace import Workspace
from falconer_assets.versions import task_labels_version
from falconer_assets.warehouse.rows import annotation_set_version
from falconer_assets.warehouse.store import (
    read_cached_stratum,
    read_cached_subtask,
    read_corpus_sample,
    write_annotations,
    write_cached_stratum,
    write_cached_subtask,
)


ANNOTATIONS_VERSION = "2"
"""``code_version`` of ``annotations``: bump it when which documents are annotated changes for every task
(2: the held-out split is enlarged with a weighted high-score stratum); the automation then re-runs each
task's annotations, which reuse every cached sub-task and pay the LLM only for the new documents."""


class AnnotationsConfig(dg.Config, LabelHeuristic):
    """The Appendix B settings (:class:`~falconer_assets.generator.annotate.LabelHeuristic`) as run config."""


@dg.asset(
    key=ANNOTATIONS,
    partitions_def=TASKS,
    deps=[PLAN, TASK_LABELS],  # and every <corpus>/corpus_sample, added by definitions.py (the corpora are data)
    code_version=ANNOTATIONS_VERSION,
    automation_condition=on_change(),
    group_name="generator",
    kinds={"duckdb"},
    check_specs=[dg.AssetCheckSpec("nonempty", asset=ANNOTATIONS, blocking=True)],
)
def annotations(context: dg.AssetExecutionContext, config: AnnotationsConfig, workspace: Workspace,
                llm: LLMResource, proxy: ProxyResource, warehouse: DuckDBResource):
    """The annotator's answers to every plan sub-task on the corpus sample, plus Appendix B picks.

    Every unique sub-task `(kind, instruction)` of the plan is annotated on every sampled doc
    (`origin` "sample", the sample's split). With `label_heuristic` on, each label sub-task is also
    annotated on extra training docs scored zero-shot by the proxy base (`origin` = why it was picked,
    split "train"), and each span sub-task on the union of the label sub-tasks' likely positives
    (`origin` "likely_positive", split "train"), so an extraction that occurs only in the rare
    positives (a game's genre) gets training spans. When the random held-out docs hold too few
    positives, the held-out split is enlarged with docs of the high-score stratum, annotated on every
    sub-task and weighted so `eval` stays unbiased (`heldout_*` settings; metadata `heldout_stratum`).
    Span answers are aligned to character offsets;
    answers not found in the text are dropped and counted. Sub-tasks are cached in
    `subtask_annotations`: a new plan that reuses three of four sub-tasks pays the LLM for the fourth
    only (a span sub-task's key includes the plan's label questions and the heuristic settings).
    LLM faults are retried (HTTP 429/5xx, timeouts, answers that are not chat completions; a dead embedded
    server is restarted) and counted in the metadata (`llm_retries`, `llm_rate_limited`, `llm_server_errors`,
    `llm_no_response`, `llm_garbage_responses`, `llm_failures`, `llm_server_starts`; `garbage_answers`: label
    replies neither yes nor no); a call that still fails fails the run with those counts, and a re-run pays
    for no answer twice (LLM cache, sub-task cache).
    Human labels (`data/tasks/<task>.labels.jsonl`, the `task_labels` source) replace the annotator's
    answers on those docs and sub-tasks: the LLM is not asked them, the rows have `origin` "human" and
    the doc's split from sampling (a doc outside the sample joins the training split); the file is
    checked against the corpus text and the plan first, and any bad line fails the run naming it
    (metadata `human_labels`, `human_labels_outside_sample`, `labels_version`).
    Writes the task's rows of `annotations`. Data version: the set of (kind, instruction, doc, split, label, spans), so an unchanged
    annotation set leaves `proxy_checkpoint` fresh (a labels edit that changes no answer, e.g. a human
    confirming the LLM's, retrains nothing). Blocking check `nonempty`.
    """
    task = workspace.task(context.partition_key)
    try:
        config.check()  # before any LLM call
    except ValueError as exc:
        raise dg.Failure(f"bad annotations config: {exc}") from exc
    corpus = workspace.corpus(task.corpus)
    with warehouse.get_connection() as conn:
        plan = workspace.plan(conn, task.name)
        sampled = read_corpus_sample(conn, task.corpus)
    sub_tasks = [(c.kind, c.instruction) for c in plan.calls]
    labels_version = task_labels_version(task.path)  # the labels file these rows hold (metadata)
    human = workspace.human_labels(task, corpus, sub_tasks)  # checked before any LLM call
    if human is not None:
        context.log.info(f"human labels {human.path}: {human.counts()}")

    def cached(key: str):
        with warehouse.get_connection() as conn:
            return read_cached_subtask(conn, key)

    def save(key: str, rows) -> None:  # each sub-task as soon as it is done: a later failure keeps it
        with warehouse.get_connection() as conn:
            write_cached_subtask(conn, key, task.corpus, rows)

    def cached_stratum(key: str):
        with warehouse.get_connection() as conn:
            return read_cached_stratum(conn, key)

    def save_stratum(key: str, stratum: dict) -> None:
        with warehouse.get_connection() as conn:
            write_cached_stratum(conn, key, task.corpus, stratum)

    if not any(doc_id in corpus.by_id for doc_id, _ in sampled):
        raise dg.Failure(f"no sampled documents for corpus {task.corpus!r}: materialize "
                         f"{task.corpus}/corpus_sample first")
    before = llm.stats.as_dict()
    try:
        result = annotate_sub_tasks(
            corpus=task.corpus, docs=corpus.by_id, sampled=sampled,
            sub_tasks=sub_tasks, heuristic=config,
            llm_identity=[llm.base_url, llm.model, llm.temperature, llm.max_tokens],
            scorer_name=proxy.base_model or "metamodel", cached=cached, save=save, chat=llm.chat,
            chat_many=llm.chat_many, load_scorer=lambda: _zero_shot_scorer(context, proxy), log=context.log.info,
            cached_stratum=cached_stratum, save_stratum=save_stratum,
            human=human.by_sub_task() if human is not None else None)
    except (openai.OpenAIError, LlamaServerError) as exc:  # after every retry: a clear failure, faults counted
        faults = _llm_faults(before, llm.stats.as_dict())
        raise dg.Failure(
            f"the LLM failed after {faults['llm_retries']} retries ({type(exc).__name__}: {str(exc)[:300]}). Every "
            f"answer obtained so far is in the LLM cache ({llm.cache_path}) and every finished sub-task in the "
            f"sub-task cache: a re-run pays for none of them again.", metadata=faults) from exc
    with warehouse.get_connection() as conn:
        n = write_annotations(conn, task.name, result.rows)
    if result.missing_ids:
        context.log.warning(f"{len(result.missing_ids)} sampled ids are no longer in the corpus, "
                            f"e.g. {result.missing_ids[:3]}")
    if config.label_heuristic and not result.budget:
        context.log.info("label heuristic: no extra docs (the budget is 0)")
    version = annotation_set_version(result.rows)
    yield dg.MaterializeResult(asset_key=ANNOTATIONS, metadata={**_metadata(result, config), "annotations": n,
                                                                "annotation_set_version": version,
                                                                "labels_version": labels_version,
                                                                **_llm_faults(before, llm.stats.as_dict())},
                               data_version=dg.DataVersion(version))
    yield dg.AssetCheckResult(check_name="nonempty", asset_key=ANNOTATIONS, passed=n > 0, metadata={"annotations": n})


def _llm_faults(before: dict, after: dict) -> dict:
    """The LLM faults of this run (``after - before`` of :class:`~falconer_assets.llm.client.LLMStats`), as metadata.

    ``llm_retries``: HTTP attempts beyond the first of each call; ``llm_rate_limited``: HTTP 429 answers;
    ``llm_server_errors``: HTTP 5xx answers; ``llm_no_response``: attempts with no HTTP answer (timed out, or
    the connection was refused or cut); ``llm_garbage_responses``: HTTP 200 answers that were not chat
    completions; ``llm_failures``: calls that failed after every retry; ``llm_server_starts``: embedded-server
    starts (more than 1: it died and was restarted).
    """
    names = {"retries": "llm_retries", "rate_limited": "llm_rate_limited", "server_errors": "llm_server_errors",
             "no_response": "llm_no_response", "garbage_responses": "llm_garbage_responses",
             "failures": "llm_failures", "server_starts": "llm_server_starts"}
    return {meta: int(after.get(field, 0)) - int(before.get(field, 0)) for field, meta in names.items()}


def _zero_shot_scorer(context: dg.AssetExecutionContext, proxy: ProxyResource):
    """The proxy base, loaded once, as ``score(texts, question) -> P(Yes)`` for the Appendix B picks."""
    t0 = time.perf_counter()
    model = NTEProxy.load(proxy.resolved_base_model(), device=proxy.resolved_device(), seed=proxy.seed)
    context.log.info(f"label heuristic: loaded {proxy.resolved_base_model()} for zero-shot scoring "
                     f"in {time.perf_counter() - t0:.1f} s")
    return lambda texts, question: model.get_label_scores(texts, question, batch_size=proxy.inference_batch_size)


def _metadata(result: AnnotationResult, config: AnnotationsConfig) -> dict:
    """The web UI's view of an annotation run: per-sub-task counts, Appendix B picks, LLM cost."""
    summary = [st.summary() for st in result.sub_tasks]
    heuristic = {st.instruction: st.heuristic_summary() for st in result.sub_tasks
                 if st.kind == "label" and any(r.origin != "sample" for r in st.rows)}
    return {
        "extra_label_annotations": sum(s["extra_docs"] for s in summary if s["kind"] == "label"),
        "extra_span_annotations": sum(s["extra_docs"] for s in summary if s["kind"] == "span"),
        "sub_tasks": dg.MetadataValue.md(md_table(
            ["kind", "instruction", "sample docs", "extra docs", "human docs", "yes labels / spans",
             "dropped answers", "unparseable", "sub-task cache"], [list(s.values()) for s in summary])),
        "human_labels": result.human_rows,
        "human_labels_outside_sample": result.human_outside_sample,
        "sub_tasks_reused": sum(st.reused for st in result.sub_tasks),
        "sub_tasks_annotated": sum(not st.reused for st in result.sub_tasks),
        "label_heuristic": dg.MetadataValue.json({
            "enabled": config.label_heuristic, "budget_per_label_sub_task": result.budget,
            "pool_size": result.pool_size, "label_extra_ratio": config.label_extra_ratio,
            "random_share": config.random_share, "positive_share": config.positive_share, "seed": config.seed,
            "sub_tasks": heuristic}),
        "label_heuristic_table": dg.MetadataValue.md(md_table(
            ["instruction", "scored", "random picks", "likely pos. picks", "likely neg. picks",
             "yes rate: sample train", "yes rate: random picks", "yes rate: likely pos.",
             "yes rate: likely neg.", "scoring s"],
            [[q, h["candidates_scored"], *(h["picks"][r] for r in LABEL_REASONS), *h["llm_yes_rate"].values(),
              h["scoring_seconds"] if h["scoring_seconds"] is not None else ""] for q, h in heuristic.items()])),
        "heldout_stratum": dg.MetadataValue.json(None if result.stratum is None else result.stratum.to_dict()),
        "extra_heldout_docs": 0 if result.stratum is None else len(result.stratum.extra),
        "dropped_answers": sum(s["dropped"] for s in summary),
        "garbage_answers": sum(s["unparseable"] for s in summary),  # label replies neither yes nor no
        "llm_calls": result.llm_calls,
        "llm_cache_hits": result.llm_cache_hits,
        "llm_tokens": result.llm_tokens,
        "llm_seconds": round(result.llm_seconds, 2),
    }
