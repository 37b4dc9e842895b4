"""Stage 4, mining: the plan over the corpus with the proxy executing the primitives, one file at a time."""


import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.common import md_table, parse_plan, task_for_partition
from falconer_assets.assets.sources import CORPUS_FILES_KEY
from falconer_assets.automation import on_model_change
from falconer_assets.inputs.corpus import read_corpus
from falconer_assets.mining import mine_documents
from falconer_assets.proxy.model import NTEProxy
from falconer_assets.warehouse.tables import Slice, replace_slices
from falconer_assets.versions import file_sha256, rows_version
from falconer_assets.partitions import TASK_FILE_PARTITIONS, split_file_key
from falconer_assets.resources.proxy import ProxyResource


class MiningConfig(dg.Config):
    """Documents per plan batch (each primitive call inside is further batched by the proxy)."""

    batch_size: int = 512


def _by_task(name: str) -> dg.AssetIn:
    return dg.AssetIn(dg.AssetKey(name), partition_mapping=dg.MultiToSingleDimensionPartitionMapping("task"))


def write_partition(conn, task: str, file: str, rows: list[dict], rejects: list[dict], throughput: dict) -> None:
    """Replace the rows of one mining partition (task, file) in ``mined``, ``mining_rejects`` and
    ``throughput`` in one DuckDB transaction (:func:`~falconer_assets.warehouse.tables.replace_slices`):
    a re-run replaces them, a failure keeps the old ones, other partitions are never touched.
    Rows written before corpora were partitioned by file (``file`` NULL, executor
    ``proxy (full corpus)``) are dropped for the task too."""
    replace_slices(conn, [
        Slice("mined", {"task": task, "file": file}, rows),
        Slice("mined", {"task": task, "file": None}),
        Slice("mining_rejects", {"task": task, "file": file}, rejects),
        Slice("mining_rejects", {"task": task, "file": None}),
        Slice("throughput", {"task": task, "executor": throughput["executor"]}, [throughput]),
        Slice("throughput", {"task": task, "executor": "proxy (full corpus)"}),
    ])


def build_mined_asset(data_dir) -> dg.AssetsDefinition:
    """The ``mined`` asset, one partition per (task, corpus file): rows
    ``(task, file, doc_id, field, value, start, end, score)`` in the ``mined`` table.

    Every line of the file is accounted for: processed documents, corpus rejects (bad JSON,
    empty text, duplicate id...) and plan-runtime rejects (in ``mining_rejects``), counted.
    A file of another corpus than the task's is not mined (0 rows, ``skipped`` metadata).
    Metadata ``file_sha256`` records the bytes that were mined; the re-mine schedule compares
    it with the file now. Data version: hash of the partition's rows. Automation: re-mined when
    the task's plan or proxy changes; new files are requested by the corpus sensor.
    """
    key = dg.AssetKey("mined")

    @dg.asset(
        key=key,
        partitions_def=TASK_FILE_PARTITIONS,
        ins={"plan": _by_task("plan"), "proxy_checkpoint": _by_task("proxy_checkpoint")},
        deps=[dg.AssetDep(CORPUS_FILES_KEY, partition_mapping=dg.MultiToSingleDimensionPartitionMapping("file")),
              # lineage only (the proxy carries the annotations): lets mining wait while they re-run
              dg.AssetDep("annotations", partition_mapping=dg.MultiToSingleDimensionPartitionMapping("task"))],
        automation_condition=on_model_change(ignore=dg.AssetSelection.assets(CORPUS_FILES_KEY, "annotations")),
        group_name="mining",
        kinds={"duckdb"},
        description="Plan executed by the proxy over one corpus file (partition = task x file)",
    )
    def mined(context: dg.AssetExecutionContext, config: MiningConfig, plan: str, proxy_checkpoint: str,
              proxy: ProxyResource, warehouse: DuckDBResource):
        keys = context.partition_key.keys_by_dimension
        task = task_for_partition(data_dir, keys["task"])
        file = keys["file"]
        corpus, name = split_file_key(file)
        path = data_dir / "corpora" / corpus / name
        if corpus != task.corpus:
            context.log.info(f"{file} belongs to corpus {corpus!r}, task {task.name!r} mines {task.corpus!r}: nothing to do")
            return dg.MaterializeResult(metadata={"rows": 0, "skipped": f"file of corpus {corpus!r}"},
                                        data_version=dg.DataVersion("skipped"))
        if not path.exists():
            raise dg.Failure(f"corpus file {path} does not exist (partition {file!r}; deleted since it was registered?)")
        sha = file_sha256(path)
        validated = parse_plan(plan, f"plan[{task.name}]")
        docs, corpus_rejects = read_corpus(path)
        model = NTEProxy.load(proxy_checkpoint, device=proxy.resolved_device())
        bs = proxy.inference_batch_size
        rows, plan_rejects, stats = mine_documents(
            validated, docs,
            lambda texts, q: model.get_label(texts, q, batch_size=bs),
            lambda texts, q: model.get_span(texts, q, batch_size=bs),
            batch_size=config.batch_size, log=context.log.info,
        )
        lines = len(docs) + len(corpus_rejects)
        if stats.docs_processed + stats.docs_rejected + len(corpus_rejects) != lines:
            raise dg.Failure(f"record count mismatch in {path}: {lines} input records, {stats.docs_processed} mined, "
                             f"{stats.docs_rejected + len(corpus_rejects)} rejected")
        row_dicts = [{"task": task.name, "file": file, "doc_id": r.doc_id, "field": r.field, "value": r.value,
                      "start": r.start, "end": r.end, "score": r.score} for r in rows]
        reject_rows = [{"task": task.name, "file": file, "doc_id": r.record_id, "line_no": r.line_no,
                        "reason": r.reason} for r in corpus_rejects]
        reject_rows += [{"task": task.name, "file": file, "doc_id": d, "line_no": None, "reason": why}
                        for d, why in plan_rejects]
        with warehouse.get_connection() as conn:
            write_partition(conn, task.name, file, row_dicts, reject_rows, {
                "task": task.name, "executor": f"proxy ({file})", "docs": stats.docs_in, "seconds": stats.seconds,
                "docs_per_s": stats.docs_per_s, "tokens": 0})
        preview = [[r.doc_id, r.field, r.value, r.start, r.end, round(r.score, 3)] for r in rows[:15]]
        return dg.MaterializeResult(metadata={
            "rows": len(rows),
            "input_records": lines,
            "docs_mined": stats.docs_processed,
            "docs_retrieved": stats.docs_retrieved,
            "rejected_records": len(corpus_rejects) + stats.docs_rejected,
            "rows_per_field": dg.MetadataValue.json(stats.rows_per_field),
            "docs_per_s": round(stats.docs_per_s, 1),
            "seconds": round(stats.seconds, 1),
            "file_sha256": sha,
            "preview": dg.MetadataValue.md(md_table(["doc_id", "field", "value", "start", "end", "score"], preview)),
        }, data_version=dg.DataVersion(rows_version(
            [(r.doc_id, r.field, r.value, r.start, r.end, round(r.score, 4)) for r in rows])))

    return mined
