"""Stage 2, generator (paper 3.5, Appendix B): a seeded ~5% corpus sample, LLM annotations of every
sub-task on it, and extra score-guided training docs for each classification sub-task."""


import json
import time

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.common import load_corpus, md_table, parse_plan, spans_json
from falconer_assets.core.llm_executor import LLMPrimitives
from falconer_assets.core.proxy import NTEProxy
from falconer_assets.core.sampling import (
    LABEL_REASONS,
    candidate_pool,
    check_label_shares,
    extra_budget,
    sample_size,
    sample_with_split,
    select_label_candidates,
)
from falconer_assets.core.store import replace_rows
from falconer_assets.core.tasks import Task
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
    each with line number and reason). It does not depend on any instruction.
    """
    key = dg.AssetKey([corpus, "corpus_sample"])

    @dg.asset(key=key, group_name="generator", kinds={"duckdb"},
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
        })

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


def build_annotations_asset(task: Task, data_dir) -> dg.AssetsDefinition:
    """The ``<task>/annotations`` asset: the LLM's answers on the corpus sample, plus extra label docs.

    Every sub-task is annotated on every sampled doc (``origin`` ``"sample"``, the sample's
    split). With :attr:`AnnotationsConfig.label_heuristic` on, each label sub-task is also
    annotated on extra docs picked by :func:`~falconer_assets.core.sampling.select_label_candidates`
    (``origin`` = its reason, split ``"train"``). Span answers are aligned to character offsets;
    answers not found in the text are dropped and counted. Writes the ``annotations`` table.
    Blocking check ``nonempty`` fails when no annotation was produced.
    """
    key = dg.AssetKey([task.name, "annotations"])

    @dg.asset(
        key=key,
        ins={"plan": dg.AssetIn(dg.AssetKey([task.name, "plan"]))},
        deps=[dg.AssetKey([task.corpus, "corpus_sample"])],
        group_name="generator",
        kinds={"duckdb"},
        description="LLM annotations of every plan sub-task on the corpus sample, plus score-guided "
                    "extra training docs per label sub-task (paper Appendix B)",
        check_specs=[dg.AssetCheckSpec("nonempty", asset=key, blocking=True)],
    )
    def annotations(context: dg.AssetExecutionContext, config: AnnotationsConfig, plan: str,
                    llm: LLMResource, proxy: ProxyResource, warehouse: DuckDBResource):
        validated = parse_plan(plan, f"{task.name}/plan")
        try:  # fail before any LLM call
            check_label_shares(config.random_share, config.positive_share)
            extra_budget(0, config.label_extra_ratio)
            if config.candidate_pool < 0:
                raise ValueError(f"candidate_pool must be >= 0, got {config.candidate_pool}")
        except ValueError as exc:
            raise dg.Failure(f"bad annotations config: {exc}") from exc
        docs = {d.id: d for d in load_corpus(data_dir, task.corpus)[0]}
        with warehouse.get_connection() as conn:
            sampled = conn.execute(
                "SELECT doc_id, split FROM corpus_sample WHERE corpus = ? ORDER BY doc_id", [task.corpus]
            ).fetchall()
        missing = [i for i, _ in sampled if i not in docs]
        if missing:
            context.log.warning(f"{len(missing)} sampled ids are no longer in the corpus, e.g. {missing[:3]}")
        sample = [(i, s) for i, s in sampled if i in docs]
        if not sample:
            raise dg.Failure(f"no sampled documents for corpus {task.corpus!r}: materialize corpus_sample first")

        # Appendix B: extra docs per label sub-task, from a pool outside the whole corpus sample.
        label_calls = list(dict.fromkeys(c.instruction for c in validated.calls if c.kind == "label"))
        n_train = sum(s == "train" for _, s in sample)
        budget = extra_budget(n_train, config.label_extra_ratio) if config.label_heuristic and label_calls else 0
        pool = candidate_pool(docs, {i for i, _ in sampled}, config.candidate_pool, config.seed) if budget else []
        extras: dict[str, list[tuple[str, str]]] = {}  # label instruction -> [(doc_id, reason)]
        heuristic: dict[str, dict] = {}  # label instruction -> what the metadata reports
        scorer = None
        for instruction in label_calls if pool else []:
            if scorer is None:  # one zero-shot model for every label sub-task
                t_load = time.perf_counter()
                scorer = NTEProxy.load(proxy.resolved_base_model(), device=proxy.resolved_device(), seed=proxy.seed)
                context.log.info(f"label heuristic: loaded {proxy.resolved_base_model()} for zero-shot scoring "
                                 f"in {time.perf_counter() - t_load:.1f} s")
            t0 = time.perf_counter()
            scores = scorer.get_label_scores([docs[i].text for i in pool], instruction,
                                             batch_size=proxy.inference_batch_size)
            picks = select_label_candidates(dict(zip(pool, scores)), budget, config.random_share,
                                            config.positive_share, config.seed)
            extras[instruction] = picks
            heuristic[instruction] = {
                "candidates_scored": len(pool), "scoring_seconds": round(time.perf_counter() - t0, 2),
                "picks": {r: sum(reason == r for _, reason in picks) for r in LABEL_REASONS},
            }

        llm_exec = LLMPrimitives(lambda messages: llm.chat(messages))
        rows, summary = [], []
        total = len(validated.calls) * len(sample) + sum(len(p) for p in extras.values())
        t0 = time.perf_counter()
        done_extra: set[str] = set()
        for call in validated.calls:
            todo = [(doc_id, split, "sample") for doc_id, split in sample]
            if call.kind == "label" and call.instruction not in done_extra:
                # a plan may ask the same question twice: its extra docs are annotated once
                todo += [(doc_id, "train", reason) for doc_id, reason in extras.get(call.instruction, [])]
                done_extra.add(call.instruction)
            dropped = unparsed = positives = spans = 0
            labels: dict[str, list[bool | None]] = {}  # LLM labels by where the doc came from
            for doc_id, split, origin in todo:
                a = llm_exec.annotate(call.kind, docs[doc_id].text, call.instruction)
                rows.append({
                    "task": task.name, "kind": call.kind, "instruction": call.instruction, "doc_id": doc_id,
                    "split": split, "label": a.label, "spans": spans_json(a.spans),
                    "dropped": json.dumps(a.dropped, ensure_ascii=False), "parse_ok": a.parse_ok,
                    "raw": a.raw, "latency_s": a.latency_s, "tokens": a.tokens, "origin": origin,
                })
                dropped += len(a.dropped)
                unparsed += not a.parse_ok
                positives += bool(a.label)
                spans += len(a.spans)
                group = f"sample_{split}" if origin == "sample" else origin
                labels.setdefault(group, []).append(a.label if a.parse_ok else None)
                if len(rows) % 25 == 0:
                    rate = len(rows) / (time.perf_counter() - t0)
                    context.log.info(f"annotated {len(rows)}/{total} ({rate:.2f}/s, ETA {(total - len(rows)) / rate:.0f} s)")
            n_extra = len(todo) - len(sample)
            summary.append([call.kind, call.instruction, len(sample), n_extra,
                            positives if call.kind == "label" else spans, dropped, unparsed])
            if call.kind == "label" and call.instruction in heuristic and n_extra:
                h = heuristic[call.instruction]
                h["llm_yes_rate"] = {g: _yes_rate(labels.get(g, [])) for g in ("sample_train", *LABEL_REASONS)}
                rates = h["llm_yes_rate"]
                context.log.info(
                    f"label heuristic {call.instruction!r}: scored {h['candidates_scored']} candidates in "
                    f"{h['scoring_seconds']} s, picked {h['picks']}; LLM yes rate: random sample train "
                    f"{rates['sample_train']}, extra random {rates['random']}, likely positives "
                    f"{rates['likely_positive']}, likely negatives {rates['likely_negative']}")
        if config.label_heuristic and not extras:
            why = ("the plan has no label sub-task" if not label_calls
                   else "the budget is 0" if not budget else "no corpus doc is outside the sample")
            context.log.info(f"label heuristic: no extra docs ({why})")
        with warehouse.get_connection() as conn:
            n = replace_rows(conn, "annotations", "task", task.name, rows)
        cached = sum(a.cached for a in llm_exec.annotations)
        heuristic_rows = [
            [i, h["candidates_scored"], *(h["picks"][r] for r in LABEL_REASONS),
             *(h.get("llm_yes_rate", {}).get(g) for g in ("sample_train", *LABEL_REASONS)), h["scoring_seconds"]]
            for i, h in heuristic.items()]
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "annotations": n,
                "extra_label_annotations": sum(r[3] for r in summary),
                "sub_tasks": dg.MetadataValue.md(md_table(
                    ["kind", "instruction", "sample docs", "extra docs", "yes labels / spans", "dropped answers",
                     "unparseable"], summary)),
                "label_heuristic": dg.MetadataValue.json({
                    "enabled": config.label_heuristic, "budget_per_label_sub_task": budget,
                    "pool_size": len(pool), "label_extra_ratio": config.label_extra_ratio,
                    "random_share": config.random_share, "positive_share": config.positive_share,
                    "seed": config.seed, "sub_tasks": heuristic}),
                "label_heuristic_table": dg.MetadataValue.md(md_table(
                    ["instruction", "scored", "random picks", "likely pos. picks", "likely neg. picks",
                     "yes rate: sample train", "yes rate: random picks", "yes rate: likely pos.",
                     "yes rate: likely neg.", "scoring s"], heuristic_rows)),
                "dropped_answers": sum(r[5] for r in summary),
                "llm_calls": len(llm_exec.annotations),
                "llm_cache_hits": cached,
                "llm_tokens": llm_exec.tokens,
                "llm_seconds": round(llm_exec.llm_seconds, 2),
            },
        )
        yield dg.AssetCheckResult(check_name="nonempty", asset_key=key, passed=n > 0, metadata={"annotations": n})

    return annotations
