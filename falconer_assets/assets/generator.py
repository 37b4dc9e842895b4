"""Stage 2, generator (paper 3.5): a seeded ~5% corpus sample and LLM annotations of every sub-task."""


import json
import time

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.common import load_corpus, md_table, parse_plan, spans_json
from falconer_assets.core.llm_executor import LLMPrimitives
from falconer_assets.core.sampling import sample_size, sample_with_split
from falconer_assets.core.store import replace_rows
from falconer_assets.core.tasks import Task
from falconer_assets.resources.llm import LLMResource


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


def build_annotations_asset(task: Task, data_dir) -> dg.AssetsDefinition:
    """The ``<task>/annotations`` asset: the LLM's answer to every sub-task on every sampled text.

    Span answers are aligned to character offsets; answers not found in the text are dropped and
    counted. Writes the ``annotations`` table (one row per sub-task x sampled doc).
    Blocking check ``nonempty`` fails when no annotation was produced.
    """
    key = dg.AssetKey([task.name, "annotations"])

    @dg.asset(
        key=key,
        ins={"plan": dg.AssetIn(dg.AssetKey([task.name, "plan"]))},
        deps=[dg.AssetKey([task.corpus, "corpus_sample"])],
        group_name="generator",
        kinds={"duckdb"},
        description="LLM annotations of every plan sub-task on the corpus sample",
        check_specs=[dg.AssetCheckSpec("nonempty", asset=key, blocking=True)],
    )
    def annotations(context: dg.AssetExecutionContext, plan: str, llm: LLMResource, warehouse: DuckDBResource):
        validated = parse_plan(plan, f"{task.name}/plan")
        docs = {d.id: d for d in load_corpus(data_dir, task.corpus)[0]}
        with warehouse.get_connection() as conn:
            sample = conn.execute(
                "SELECT doc_id, split FROM corpus_sample WHERE corpus = ? ORDER BY doc_id", [task.corpus]
            ).fetchall()
        missing = [i for i, _ in sample if i not in docs]
        if missing:
            context.log.warning(f"{len(missing)} sampled ids are no longer in the corpus, e.g. {missing[:3]}")
        sample = [(i, s) for i, s in sample if i in docs]
        if not sample:
            raise dg.Failure(f"no sampled documents for corpus {task.corpus!r}: materialize corpus_sample first")
        llm_exec = LLMPrimitives(lambda messages: llm.chat(messages))
        rows, summary = [], []
        total, t0 = len(validated.calls) * len(sample), time.perf_counter()
        for call in validated.calls:
            dropped = unparsed = positives = spans = 0
            for doc_id, split in sample:
                a = llm_exec.annotate(call.kind, docs[doc_id].text, call.instruction)
                rows.append({
                    "task": task.name, "kind": call.kind, "instruction": call.instruction, "doc_id": doc_id,
                    "split": split, "label": a.label, "spans": spans_json(a.spans),
                    "dropped": json.dumps(a.dropped, ensure_ascii=False), "parse_ok": a.parse_ok,
                    "raw": a.raw, "latency_s": a.latency_s, "tokens": a.tokens,
                })
                dropped += len(a.dropped)
                unparsed += not a.parse_ok
                positives += bool(a.label)
                spans += len(a.spans)
                if len(rows) % 25 == 0:
                    rate = len(rows) / (time.perf_counter() - t0)
                    context.log.info(f"annotated {len(rows)}/{total} ({rate:.2f}/s, ETA {(total - len(rows)) / rate:.0f} s)")
            summary.append([call.kind, call.instruction, len(sample),
                            positives if call.kind == "label" else spans, dropped, unparsed])
        with warehouse.get_connection() as conn:
            n = replace_rows(conn, "annotations", "task", task.name, rows)
        cached = sum(a.cached for a in llm_exec.annotations)
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "annotations": n,
                "sub_tasks": dg.MetadataValue.md(md_table(
                    ["kind", "instruction", "docs", "yes labels / spans", "dropped answers", "unparseable"], summary)),
                "dropped_answers": sum(r[4] for r in summary),
                "llm_calls": len(llm_exec.annotations),
                "llm_cache_hits": cached,
                "llm_tokens": llm_exec.tokens,
                "llm_seconds": round(llm_exec.llm_seconds, 2),
            },
        )
        yield dg.AssetCheckResult(check_name="nonempty", asset_key=key, passed=n > 0, metadata={"annotations": n})

    return annotations
