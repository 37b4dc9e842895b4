"""Stage 4, mining: the plan over the whole corpus with the proxy executing the primitives."""


import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.common import load_corpus, md_table, parse_plan
from falconer_assets.core.mining import mine_documents
from falconer_assets.core.proxy import NTEProxy
from falconer_assets.core.store import replace_rows
from falconer_assets.core.tasks import Task
from falconer_assets.resources.proxy import ProxyResource


class MiningConfig(dg.Config):
    """Documents per plan batch (each primitive call inside is further batched by the proxy)."""

    batch_size: int = 512


def build_mined_asset(task: Task, data_dir) -> dg.AssetsDefinition:
    """The ``<task>/mined`` asset: rows ``(task, doc_id, field, value, start, end, score)`` in ``mined``.

    Every corpus line is accounted for: processed documents, corpus rejects (bad JSON, empty
    text, duplicate id...) and plan-runtime rejects are written to ``mining_rejects`` and counted.
    Blocking check ``nonempty`` fails when no row was mined.
    """
    key = dg.AssetKey([task.name, "mined"])

    @dg.asset(
        key=key,
        ins={"plan": dg.AssetIn(dg.AssetKey([task.name, "plan"])),
             "proxy_checkpoint": dg.AssetIn(dg.AssetKey([task.name, "proxy_checkpoint"]))},
        group_name="mining",
        kinds={"duckdb"},
        description="Plan executed over the whole corpus by the proxy",
        check_specs=[dg.AssetCheckSpec("nonempty", asset=key, blocking=True)],
    )
    def mined(context: dg.AssetExecutionContext, config: MiningConfig, plan: str, proxy_checkpoint: str,
              proxy: ProxyResource, warehouse: DuckDBResource):
        validated = parse_plan(plan, f"{task.name}/plan")
        docs, corpus_rejects = load_corpus(data_dir, task.corpus)
        model = NTEProxy.load(proxy_checkpoint, device=proxy.resolved_device())
        bs = proxy.inference_batch_size
        rows, plan_rejects, stats = mine_documents(
            validated, docs,
            lambda texts, q: model.get_label(texts, q, batch_size=bs),
            lambda texts, q: model.get_span(texts, q, batch_size=bs),
            batch_size=config.batch_size, log=context.log.info,
        )
        reject_rows = [{"task": task.name, "doc_id": r.record_id, "line_no": r.line_no, "reason": r.reason}
                       for r in corpus_rejects]
        reject_rows += [{"task": task.name, "doc_id": d, "line_no": None, "reason": why} for d, why in plan_rejects]
        with warehouse.get_connection() as conn:
            n = replace_rows(conn, "mined", "task", task.name, [
                {"task": task.name, "doc_id": r.doc_id, "field": r.field, "value": r.value,
                 "start": r.start, "end": r.end, "score": r.score} for r in rows])
            replace_rows(conn, "mining_rejects", "task", task.name, reject_rows)
            conn.execute("DELETE FROM throughput WHERE task = ? AND executor = 'proxy (full corpus)'", [task.name])
            conn.execute("INSERT INTO throughput VALUES (?, 'proxy (full corpus)', ?, ?, ?, 0)",
                         [task.name, stats.docs_in, stats.seconds, stats.docs_per_s])
        lines = len(docs) + len(corpus_rejects)
        if stats.docs_processed + stats.docs_rejected + len(corpus_rejects) != lines:
            raise dg.Failure(f"record count mismatch: {lines} input records, {stats.docs_processed} mined, "
                             f"{stats.docs_rejected + len(corpus_rejects)} rejected")
        preview = [[r.doc_id, r.field, r.value, r.start, r.end, round(r.score, 3)] for r in rows[:15]]
        yield dg.MaterializeResult(asset_key=key, metadata={
            "rows": n,
            "input_records": lines,
            "docs_mined": stats.docs_processed,
            "docs_retrieved": stats.docs_retrieved,
            "rejected_records": len(corpus_rejects) + stats.docs_rejected,
            "rows_per_field": dg.MetadataValue.json(stats.rows_per_field),
            "docs_per_s": round(stats.docs_per_s, 1),
            "seconds": round(stats.seconds, 1),
            "preview": dg.MetadataValue.md(md_table(["doc_id", "field", "value", "start", "end", "score"], preview)),
        })
        yield dg.AssetCheckResult(check_name="nonempty", asset_key=key, passed=n > 0, metadata={"rows": n})

    return mined
