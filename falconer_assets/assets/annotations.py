"""Stage 2, generator (paper 3.5, Appendix B): a seeded ~5% corpus sample, LLM annotations of every
sub-task on it, and extra score-guided training docs for each classification sub-task."""


import json
import time

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.common import load_corpus, md_table, parse_plan, spans_json, task_for_partition
from falconer_assets.automation import on_change, on_missing
from falconer_assets.llm.executor import LLMPrimitives
from falconer_assets.proxy.model import NTEProxy
from falconer_assets.generator.sampling import (
    LABEL_REASONS,
    candidate_pool,
    check_label_shares,
    extra_budget,
    sample_size,
    sample_with_split,
    select_label_candidates,
)
from falconer_assets.warehouse.tables import ensure_schema, replace_rows
from falconer_assets.versions import annotation_set_version, digest
from falconer_assets.partitions import TASKS
from falconer_assets.resources.llm import LLMResource
from falconer_assets.resources.proxy import ProxyResource


class SampleConfig(dg.Config):
    """How much of the corpus the LLM annotates (paper 3.5: about 5%) and the held-out share."""

    fraction: float = 0.05
    min_docs: int = 40
    max_docs: int = 200
    heldout_fraction: float = 0.25
    seed: int = 0


def build_corpus_sample_asset(corpus: str, data_dir) -> dg.AssetsDefinition:
    """The ``<corpus>/corpus_sample`` asset: sampled doc ids with a train/held-out split.

    Writes ``corpus_sample`` (corpus, doc_id, split) and ``corpus_rejects`` (bad input lines,
    each with file, line number and reason). It does not depend on any instruction, and new
    corpus files do not re-sample it (they are mined with the current proxy): it is only
    materialized when missing, or by hand. Data version: hash of the sampled (id, split) set.
    """
    key = dg.AssetKey([corpus, "corpus_sample"])

    @dg.asset(key=key, group_name="generator", kinds={"duckdb"}, automation_condition=on_missing(),
              description=f"Seeded sample of corpus {corpus!r} with a train/held-out split")
    def corpus_sample(context: dg.AssetExecutionContext, config: SampleConfig, warehouse: DuckDBResource):
        docs, rejects = load_corpus(data_dir, corpus)
        if not docs:
            raise dg.Failure(f"corpus {corpus!r} has no valid documents ({len(rejects)} rejected)")
        n = sample_size(len(docs), config.fraction, config.min_docs, config.max_docs)
        chosen = sample_with_split([d.id for d in docs], n, config.heldout_fraction, config.seed)
        for r in rejects[:20]:
            context.log.warning(f"rejected {r.source}:{r.line_no} (id={r.record_id}): {r.reason}")
        with warehouse.get_connection() as conn:
            replace_rows(conn, "corpus_sample", "corpus", corpus,
                         [{"corpus": corpus, "doc_id": i, "split": s} for i, s in chosen])
            replace_rows(conn, "corpus_rejects", "corpus", corpus, [
                {"corpus": corpus, "source": r.source, "line_no": r.line_no, "record_id": r.record_id,
                 "reason": r.reason, "raw": r.raw} for r in rejects])
        n_heldout = sum(s == "heldout" for _, s in chosen)
        return dg.MaterializeResult(metadata={
            "corpus_docs": len(docs), "corpus_rejects": len(rejects), "sampled": len(chosen),
            "train": len(chosen) - n_heldout, "heldout": n_heldout, "seed": config.seed,
            "fraction": config.fraction,
        }, data_version=dg.DataVersion(digest(chosen)))

    return corpus_sample


class AnnotationsConfig(dg.Config):
    """Extra training docs for classification sub-tasks, chosen by the paper's Appendix B heuristic.

    For each ``get_label`` sub-task of the plan, besides the corpus sample, the LLM annotates
    ``round(label_extra_ratio * n_train)`` more docs (``n_train``: training docs of the corpus
    sample) for that sub-task only. They come from a seeded random pool of at most
    ``candidate_pool`` docs outside the corpus sample, scored zero-shot (``P(Yes)``) by the proxy
    base model (:class:`ProxyResource`); ``random_share`` of them are drawn at random from the
    pool, and the rest are the highest-scored (``positive_share`` of the rest, "likely positives":
    positives are usually the rare class) and the lowest-scored ("likely negatives"). They are
    training data only (split ``train``); the held-out split stays the random corpus sample.
    Span sub-tasks stay on the random sample (paper: "for extraction tasks, we directly employ
    random sampling"). ``label_heuristic=False`` (or ratio 0) annotates the corpus sample only.
    ``seed`` drives the pool and the picks (default 0, like :class:`SampleConfig`).
    """

    label_heuristic: bool = True
    label_extra_ratio: float = 1.0
    random_share: float = 0.25
    positive_share: float = 0.75
    candidate_pool: int = 1000
    seed: int = 0


def _yes_rate(labels: list[bool | None]) -> float | None:
    """Share of ``True`` among parsed labels (``None`` = unparseable, left out); ``None`` if none."""
    parsed = [bool(x) for x in labels if x is not None]
    return round(sum(parsed) / len(parsed), 4) if parsed else None


def subtask_cache_key(corpus: str, sample_version: str, kind: str, instruction: str, config: AnnotationsConfig,
                      llm: LLMResource, scorer_base: str) -> str:
    """Key of one sub-task's annotations in ``subtask_annotations``: everything its rows depend on.

    That is the corpus, the sample (version of its (id, split) set), the sub-task, the LLM
    (endpoint, model, temperature, max tokens) and, for a label sub-task with the Appendix B
    heuristic on, the heuristic settings and the zero-shot scorer. A plan that asks a sub-task
    already annotated under the same key reuses those rows without any LLM call.
    """
    heuristic = None
    if kind == "label" and config.label_heuristic and config.label_extra_ratio > 0:
        heuristic = {**config.model_dump(), "scorer": scorer_base}
    return digest("subtask", corpus, sample_version, kind, instruction,
                  [llm.base_url, llm.model, llm.temperature, llm.max_tokens], heuristic)


ROW_COLUMNS = ("kind", "instruction", "doc_id", "split", "label", "spans", "dropped", "parse_ok", "raw",
               "latency_s", "tokens", "origin")


def _summary_row(kind: str, instruction: str, rows: list[dict], reused: bool) -> list:
    sample = [r for r in rows if r["origin"] == "sample"]
    hits = sum(bool(r["label"]) for r in rows) if kind == "label" else sum(len(json.loads(r["spans"])) for r in rows)
    dropped = sum(len(json.loads(r["dropped"] or "[]")) for r in rows)
    return [kind, instruction, len(sample), len(rows) - len(sample), hits, dropped,
            sum(not r["parse_ok"] for r in rows), "reused" if reused else "annotated"]


def _heuristic_row(instruction: str, rows: list[dict], scored: dict | None) -> list:
    def rate(group):
        labels = [r["label"] if r["parse_ok"] else None for r in rows
                  if (f"sample_{r['split']}" if r["origin"] == "sample" else r["origin"]) == group]
        return _yes_rate(labels)

    picks = [sum(r["origin"] == reason for r in rows) for reason in LABEL_REASONS]
    return [instruction, scored["candidates_scored"] if scored else "cached", *picks,
            *(rate(g) for g in ("sample_train", *LABEL_REASONS)), scored["scoring_seconds"] if scored else ""]


def build_annotations_asset(data_dir, corpora: list[str]) -> dg.AssetsDefinition:
    """The ``annotations`` asset (one partition per task): the LLM's answers for every plan sub-task.

    Every unique sub-task ``(kind, instruction)`` of the plan is annotated on every sampled doc
    (``origin`` ``"sample"``, the sample's split). With :attr:`AnnotationsConfig.label_heuristic`
    on, each label sub-task is also annotated on extra docs picked by
    :func:`~falconer_assets.generator.sampling.select_label_candidates` (``origin`` = its reason,
    split ``"train"``). Span answers are aligned to character offsets; answers not found in the
    text are dropped and counted.

    Sub-tasks are cached in ``subtask_annotations`` under :func:`subtask_cache_key`: a new plan
    that reuses three of four sub-tasks pays the LLM for the fourth only. Writes the task's rows
    of ``annotations``. Data version: :func:`~falconer_assets.versions.annotation_set_version`,
    so an unchanged annotation set leaves ``proxy_checkpoint`` fresh. Blocking check
    ``nonempty`` fails when no annotation was produced.
    """
    key = dg.AssetKey("annotations")

    @dg.asset(
        key=key,
        partitions_def=TASKS,
        ins={"plan": dg.AssetIn(dg.AssetKey("plan"))},
        deps=[dg.AssetKey([c, "corpus_sample"]) for c in corpora],
        automation_condition=on_change(),
        group_name="generator",
        kinds={"duckdb"},
        description="LLM annotations of every plan sub-task on the corpus sample, plus score-guided "
                    "extra training docs per label sub-task (paper Appendix B); cached per sub-task",
        check_specs=[dg.AssetCheckSpec("nonempty", asset=key, blocking=True)],
    )
    def annotations(context: dg.AssetExecutionContext, config: AnnotationsConfig, plan: str,
                    llm: LLMResource, proxy: ProxyResource, warehouse: DuckDBResource):
        task = task_for_partition(data_dir, context.partition_key)
        validated = parse_plan(plan, f"plan[{task.name}]")
        try:  # fail before any LLM call
            check_label_shares(config.random_share, config.positive_share)
            extra_budget(0, config.label_extra_ratio)
            if config.candidate_pool < 0:
                raise ValueError(f"candidate_pool must be >= 0, got {config.candidate_pool}")
        except ValueError as exc:
            raise dg.Failure(f"bad annotations config: {exc}") from exc
        docs = {d.id: d for d in load_corpus(data_dir, task.corpus)[0]}
        with warehouse.get_connection() as conn:
            ensure_schema(conn)
            sampled = conn.execute(
                "SELECT doc_id, split FROM corpus_sample WHERE corpus = ? ORDER BY doc_id", [task.corpus]
            ).fetchall()
        missing = [i for i, _ in sampled if i not in docs]
        if missing:
            context.log.warning(f"{len(missing)} sampled ids are no longer in the corpus, e.g. {missing[:3]}")
        sample = [(i, s) for i, s in sampled if i in docs]
        if not sample:
            raise dg.Failure(f"no sampled documents for corpus {task.corpus!r}: materialize "
                             f"{task.corpus}/corpus_sample first")
        sample_version = digest(sample)
        sub_tasks = list(dict.fromkeys((c.kind, c.instruction) for c in validated.calls))
        scorer_base = proxy.base_model or "metamodel"
        keys = {st: subtask_cache_key(task.corpus, sample_version, *st, config, llm, scorer_base) for st in sub_tasks}
        with warehouse.get_connection() as conn:
            cached: dict[str, list[dict]] = {}
            for k in keys.values():
                cur = conn.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM subtask_annotations WHERE cache_key = ? "
                                   "ORDER BY origin, doc_id", [k])
                found = [dict(zip(ROW_COLUMNS, r)) for r in cur.fetchall()]
                if found:
                    cached[k] = found

        # Appendix B: extra docs per label sub-task, from a pool outside the whole corpus sample.
        n_train = sum(s == "train" for _, s in sample)
        budget = extra_budget(n_train, config.label_extra_ratio) if config.label_heuristic else 0
        todo = [st for st in sub_tasks if keys[st] not in cached]
        pool = candidate_pool(docs, {i for i, _ in sampled}, config.candidate_pool, config.seed) \
            if budget and any(kind == "label" for kind, _ in todo) else []
        scorer, scored = None, {}
        llm_exec = LLMPrimitives(lambda messages: llm.chat(messages))
        total = sum(len(sample) + (budget if kind == "label" and pool else 0) for kind, _ in todo)
        t0 = time.perf_counter()
        fresh: dict[str, list[dict]] = {}
        for kind, instruction in todo:
            items = [(doc_id, split, "sample") for doc_id, split in sample]
            if kind == "label" and pool:
                if scorer is None:  # one zero-shot model for every label sub-task
                    t_load = time.perf_counter()
                    scorer = NTEProxy.load(proxy.resolved_base_model(), device=proxy.resolved_device(), seed=proxy.seed)
                    context.log.info(f"label heuristic: loaded {proxy.resolved_base_model()} for zero-shot scoring "
                                     f"in {time.perf_counter() - t_load:.1f} s")
                t_score = time.perf_counter()
                scores = scorer.get_label_scores([docs[i].text for i in pool], instruction,
                                                 batch_size=proxy.inference_batch_size)
                picks = select_label_candidates(dict(zip(pool, scores)), budget, config.random_share,
                                                config.positive_share, config.seed)
                scored[instruction] = {"candidates_scored": len(pool),
                                       "scoring_seconds": round(time.perf_counter() - t_score, 2)}
                items += [(doc_id, "train", reason) for doc_id, reason in picks]
            rows = []
            for doc_id, split, origin in items:
                a = llm_exec.annotate(kind, docs[doc_id].text, instruction)
                rows.append({
                    "kind": kind, "instruction": instruction, "doc_id": doc_id, "split": split, "label": a.label,
                    "spans": spans_json(a.spans), "dropped": json.dumps(a.dropped, ensure_ascii=False),
                    "parse_ok": a.parse_ok, "raw": a.raw, "latency_s": a.latency_s, "tokens": a.tokens,
                    "origin": origin,
                })
                done = len(llm_exec.annotations)
                if done % 25 == 0:
                    rate = done / (time.perf_counter() - t0)
                    context.log.info(f"annotated {done}/{total} ({rate:.2f}/s, ETA {(total - done) / rate:.0f} s)")
            k = keys[(kind, instruction)]
            with warehouse.get_connection() as conn:  # cached as soon as done: a later failure keeps it
                replace_rows(conn, "subtask_annotations", "cache_key", k,
                             [{"cache_key": k, "corpus": task.corpus, **r} for r in rows])
            fresh[k] = rows
        if config.label_heuristic and not budget:
            context.log.info("label heuristic: no extra docs (the budget is 0)")

        task_rows = [{"task": task.name, **r} for st in sub_tasks for r in (cached.get(keys[st]) or fresh[keys[st]])]
        with warehouse.get_connection() as conn:
            n = replace_rows(conn, "annotations", "task", task.name, task_rows)
        by_subtask = {st: cached.get(keys[st]) or fresh[keys[st]] for st in sub_tasks}
        summary = [_summary_row(kind, ins, rows, keys[(kind, ins)] in cached) for (kind, ins), rows in by_subtask.items()]
        heuristic_rows = [_heuristic_row(ins, rows, scored.get(ins)) for (kind, ins), rows in by_subtask.items()
                          if kind == "label" and any(r["origin"] != "sample" for r in rows)]
        heuristic_json = {
            row[0]: {"candidates_scored": row[1], "scoring_seconds": row[-1] if row[-1] != "" else None,
                     "picks": dict(zip(LABEL_REASONS, row[2:5])),
                     "llm_yes_rate": dict(zip(("sample_train", *LABEL_REASONS), row[5:9]))}
            for row in heuristic_rows}
        cache_hits = sum(a.cached for a in llm_exec.annotations)
        version = annotation_set_version(task_rows)
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "annotations": n,
                "extra_label_annotations": sum(r[3] for r in summary),
                "sub_tasks": dg.MetadataValue.md(md_table(
                    ["kind", "instruction", "sample docs", "extra docs", "yes labels / spans", "dropped answers",
                     "unparseable", "sub-task cache"], summary)),
                "sub_tasks_reused": sum(r[7] == "reused" for r in summary),
                "sub_tasks_annotated": sum(r[7] == "annotated" for r in summary),
                "label_heuristic": dg.MetadataValue.json({
                    "enabled": config.label_heuristic, "budget_per_label_sub_task": budget,
                    "pool_size": len(pool), "label_extra_ratio": config.label_extra_ratio,
                    "random_share": config.random_share, "positive_share": config.positive_share,
                    "seed": config.seed, "sub_tasks": heuristic_json}),
                "label_heuristic_table": dg.MetadataValue.md(md_table(
                    ["instruction", "scored", "random picks", "likely pos. picks", "likely neg. picks",
                     "yes rate: sample train", "yes rate: random picks", "yes rate: likely pos.",
                     "yes rate: likely neg.", "scoring s"], heuristic_rows)),
                "dropped_answers": sum(r[5] for r in summary),
                "llm_calls": len(llm_exec.annotations),
                "llm_cache_hits": cache_hits,
                "llm_tokens": llm_exec.tokens,
                "llm_seconds": round(llm_exec.llm_seconds, 2),
                "annotation_set_version": version,
            },
            data_version=dg.DataVersion(version),
        )
        yield dg.AssetCheckResult(check_name="nonempty", asset_key=key, passed=n > 0, metadata={"annotations": n})

    return annotations
