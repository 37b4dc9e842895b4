"""Stage 4, mining: the ``mined`` asset, the plan over one corpus file with the proxy executing the primitives."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.keys import ANNOTATIONS, CORPUS_FILES_KEY, MINED, PLAN, PROXY_CHECKPOINT
from falconer_assets.assets.metadata import md_table
from falconer_assets.automation import on_model_change
from falconer_assets.inputs.corpus import read_corpus
from falconer_assets.mining import mine_documents
from falconer_assets.partitions import TASK_FILE_PARTITIONS, split_file_key
from falconer_assets.proxy.model import NTEProxy
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets.resources.workspace import Workspace
from falconer_assets.versions import file_sha256, rows_version
from falconer_assets.warehouse.rows import RejectRow, Throughput
from falconer_assets.warehouse.store import write_mining_partition


class MiningConfig(dg.Config):
    """Documents per plan batch (each primitive call inside is further batched by the proxy)."""

    batch_size: int = 512


def _by(dimension: str, key: dg.AssetKey) -> dg.AssetDep:
    return dg.AssetDep(key, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(dimension))


@dg.asset(
    key=MINED,
    partitions_def=TASK_FILE_PARTITIONS,
    deps=[_by("task", PLAN), _by("task", PROXY_CHECKPOINT), _by("file", CORPUS_FILES_KEY),
          _by("task", ANNOTATIONS)],  # lineage only (the proxy carries the annotations): mining waits while they re-run
    automation_condition=on_model_change(ignore=dg.AssetSelection.assets(CORPUS_FILES_KEY, ANNOTATIONS)),
    group_name="mining",
    kinds={"duckdb"},
)
def mined(context: dg.AssetExecutionContext, config: MiningConfig, workspace: Workspace, proxy: ProxyResource,
          warehouse: DuckDBResource) -> dg.MaterializeResult:
    """The plan executed by the task's proxy over one corpus file (partition = task x file).

    Rows `(task, file, doc_id, field, value, start, end, score)` go to the `mined` table, with
    character offsets into the document. Every line of the file is accounted for: processed
    documents, corpus rejects (bad JSON, empty text, duplicate id...) and plan-runtime rejects (in
    `mining_rejects`), counted. A file of another corpus than the task's is not mined (0 rows,
    `skipped` metadata). Metadata `file_sha256` records the bytes that were mined; the re-mine
    schedule compares it with the file now. Data version: hash of the partition's rows. Automation:
    re-mined when the task's plan or proxy changes; new files are requested by the corpus sensor.
    """
    keys = context.partition_key.keys_by_dimension
    task = workspace.task(keys["task"])
    file = keys["file"]
    corpus, name = split_file_key(file)
    if corpus != task.corpus:
        context.log.info(f"{file} belongs to corpus {corpus!r}, task {task.name!r} mines {task.corpus!r}: nothing to do")
        return dg.MaterializeResult(metadata={"rows": 0, "skipped": f"file of corpus {corpus!r}"},
                                    data_version=dg.DataVersion("skipped"))
    path = workspace.corpus_file(corpus, name)
    if not path.exists():
        raise dg.Failure(f"corpus file {path} does not exist (partition {file!r}; deleted since it was registered?)")
    sha = file_sha256(path)
    with warehouse.get_connection() as conn:
        plan = workspace.plan(conn, task.name)
    docs, corpus_rejects = read_corpus(path)
    model = NTEProxy.load(str(proxy.checkpoint_path(task.name)), device=proxy.resolved_device())
    bs = proxy.inference_batch_size
    rows, plan_rejects, stats = mine_documents(
        plan, docs,
        lambda texts, q: model.get_label(texts, q, batch_size=bs),
        lambda texts, q: model.get_span(texts, q, batch_size=bs),
        batch_size=config.batch_size, log=context.log.info,
    )
    lines = len(docs) + len(corpus_rejects)
    if stats.docs_processed + stats.docs_rejected + len(corpus_rejects) != lines:
        raise dg.Failure(f"record count mismatch in {path}: {lines} input records, {stats.docs_processed} mined, "
                         f"{stats.docs_rejected + len(corpus_rejects)} rejected")
    rejects = [RejectRow(r.record_id, r.line_no, r.reason) for r in corpus_rejects] + plan_rejects
    with warehouse.get_connection() as conn:
        write_mining_partition(conn, task.name, file, rows, rejects,
                               Throughput(f"proxy ({file})", stats.docs_in, stats.seconds))
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
