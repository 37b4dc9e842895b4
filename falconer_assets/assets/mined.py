"""Stage 4, mining: the ``mined`` asset, the plan over one corpus file with the proxy executing the primitives."""

import dataclasses

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.keys import ANNOTATIONS, CORPUS_FILES_KEY, MINED, PLAN, PROXY_CHECKPOINT
from falconer_assets.assets.metadata import md_table
from falconer_assets.automation import on_model_change
from falconer_assets.cascade import CascadePrimitives
from falconer_assets.cascade.bands import task_bands
from falconer_assets.llm.executor import LLMPrimitives
from falconer_assets.inputs.corpus import read_corpus
from falconer_assets.mining import mine_documents
from falconer_assets.mining_ray import init_ray, mine_documents_ray, mining_executor
from falconer_assets.partitions import TASK_FILE_PARTITIONS, split_file_key
from falconer_assets.plan.limits import DEFAULT_LIMITS, PlanLimits
from falconer_assets.proxy.health import annotator_yes_rates, count_yes, yes_rate_finding
from falconer_assets.proxy.checkpoint import checkpoint_problem, stored_version
from falconer_assets.proxy.model import NTEProxy
from falconer_assets.resources.llm import LLMResource
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets.resources.workspace import Workspace
from falconer_assets.versions import file_sha256, rows_version
from falconer_assets.warehouse.rows import RejectRow, Throughput
from falconer_assets.warehouse.store import read_annotations, write_mining_partition

YES_RATE = "yes_rate"
"""Name of ``mined``'s (non-blocking) check: the proxy says yes about as often as the annotator."""


class MiningConfig(dg.Config):
    """``batch_size``: documents per plan batch (each primitive call inside is further batched by the
    proxy). ``plan_memory_mib``, ``plan_cpu_seconds``, ``plan_wall_seconds``: the OS limits of the worker
    process the plan runs in, per batch (docs/security.md; defaults of ``plan.limits.PlanLimits``)."""

    batch_size: int = 512
    plan_memory_mib: int = DEFAULT_LIMITS.memory_mib
    plan_cpu_seconds: float = DEFAULT_LIMITS.cpu_seconds
    plan_wall_seconds: float = DEFAULT_LIMITS.wall_seconds

    def limits(self) -> PlanLimits:
        """The plan limits of this config (``ValueError`` for a non-positive one)."""
        return dataclasses.replace(DEFAULT_LIMITS, memory_mib=self.plan_memory_mib,
                                   cpu_seconds=self.plan_cpu_seconds, wall_seconds=self.plan_wall_seconds)


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
    check_specs=[dg.AssetCheckSpec(YES_RATE, asset=MINED, blocking=False,
                                   description="Per label sub-task, the proxy's yes-rate over the partition's "
                                               "documents lies in the 95% Wilson interval of the annotator's "
                                               "yes-rate on the random corpus sample.")],
)
def mined(context: dg.AssetExecutionContext, config: MiningConfig, workspace: Workspace, proxy: ProxyResource,
          llm: LLMResource, warehouse: DuckDBResource):
    """The plan executed by the task's proxy over one corpus file (partition = task x file).

    Rows `(task, file, doc_id, field, value, start, end, score)` go to the `mined` table, with
    character offsets into the document. Every line of the file is accounted for: processed
    documents, corpus rejects (bad JSON, empty text, duplicate id...) and plan-runtime rejects (in
    `mining_rejects`), counted. A file of another corpus than the task's is not mined (0 rows,
    `skipped` metadata). Metadata `file_sha256` records the bytes that were mined; the re-mine
    schedule compares it with the file now. Metadata `multi_window_docs`: documents longer than the proxy's
    `max_length`, read in overlapping windows. Data version: hash of the partition's rows. Automation:
    re-mined when the task's plan or proxy changes; new files are requested by the corpus sensor.

    With a `quality:` block in the task file, the primitives run as a cascade: bands calibrated on the
    held-out annotations (`falconer_assets.cascade`, cached beside the checkpoint) keep the confident
    answers with the proxy and send the uncertain documents to the LLM (through the LLM cache); each
    row's `executor` is `llm` when its document was routed, and the metadata give the LLM share.

    Executor: in this process by default. With `FALCONER_EXECUTOR=ray` the plan batches run on a pool of
    Ray Data actors that each load the checkpoint once (`falconer_assets.mining_ray`): a local Ray sized
    to the machine, or the cluster in `RAY_ADDRESS` (the checkpoint travels through Ray's object store);
    the rows are those of the in-process run. A task with a `quality:` block mines in-process (the cascade
    has no Ray path yet; a warning says so). Metadata `executor` (`in-process`, `ray (local, N CPUs)` or
    `ray (RAY_ADDRESS=..., N CPUs)`), and on Ray `ray_actors` and `ray_batches`.

    Fails before mining when the task's latest `proxy_checkpoint` failed its blocking `no_collapse`
    check, or when the checkpoint folder does not match its manifest (half-written or truncated). Check
    `yes_rate` (a warning, not blocking): per label instruction applied to every
    document, the proxy's share of "yes" must lie in the 95% Wilson interval of the annotator's
    share on the random corpus sample (both splits); the counts are in its metadata.
    """
    keys = context.partition_key.keys_by_dimension
    task = workspace.task(keys["task"])
    file = keys["file"]
    corpus, name = split_file_key(file)
    if corpus != task.corpus:
        context.log.info(f"{file} belongs to corpus {corpus!r}, task {task.name!r} mines {task.corpus!r}: nothing to do")
        yield dg.MaterializeResult(metadata={"rows": 0, "skipped": f"file of corpus {corpus!r}"},
                                   data_version=dg.DataVersion("skipped"))
        yield dg.AssetCheckResult(check_name=YES_RATE, asset_key=MINED, passed=True, metadata={"skipped": True})
        return
    path = workspace.corpus_file(corpus, name)
    if not path.exists():
        raise dg.Failure(f"corpus file {path} does not exist (partition {file!r}; deleted since it was registered?)")
    _require_healthy_proxy(context, task.name)
    sha = file_sha256(path)
    with warehouse.get_connection() as conn:
        plan = workspace.plan(conn, task.name)
        annotation_rows = read_annotations(conn, task.name)
        annotator = annotator_yes_rates(annotation_rows)
    docs, corpus_rejects = read_corpus(path, max_line_bytes=workspace.max_line_bytes)
    checkpoint = proxy.checkpoint_path(task.name)
    bs = proxy.inference_batch_size
    cascade = None
    if _executor(context, task.quality is not None) == "ray":
        executor = init_ray()
        on_ray = mine_documents_ray(plan, docs, checkpoint, device=proxy.device, inference_batch_size=bs,
                                    batch_size=config.batch_size, precision=proxy.inference_precision,
                                    limits=config.limits(), log=context.log.info)
        rows, plan_rejects, stats, yes_counts = on_ray.rows, on_ray.rejects, on_ray.stats, on_ray.yes_counts
        multi_window_docs = on_ray.multi_window_docs
        executor_metadata = {"executor": executor, "ray_actors": on_ray.actors, "ray_batches": on_ray.batches,
                             "inference_precision": f"{proxy.inference_precision} (on each actor)"}
    else:
        model = NTEProxy.load(str(checkpoint), device=proxy.resolved_device(), precision=proxy.inference_precision)
        yes_counts: dict[str, list[int]] = {}
        get_label = lambda texts, q: model.get_label(texts, q, batch_size=bs)  # noqa: E731
        get_span = lambda texts, q: model.get_span(texts, q, batch_size=bs)  # noqa: E731
        executor_of = lambda _t: "proxy"  # noqa: E731
        if task.quality is not None:
            bands = task_bands(model, annotation_rows, workspace.corpus(task.corpus).by_id,
                               [(c.kind, c.instruction) for c in plan.calls], task.quality,
                               cache_dir=checkpoint, checkpoint_version=_bands_version(checkpoint, model.precision))
            cascade = CascadePrimitives(model, LLMPrimitives(llm.chat, llm.chat_many), bands, batch_size=bs)
            get_label, get_span = cascade.get_label, cascade.get_span
            executor_of = lambda t: "llm" if t in cascade.routed_texts else "proxy"  # noqa: E731
        model.window_stats.reset()  # count this file's documents, not the cascade's calibration texts
        rows, plan_rejects, stats = mine_documents(
            plan, docs, count_yes(get_label, yes_counts), get_span,
            batch_size=config.batch_size, log=context.log.info, executor_of=executor_of, limits=config.limits(),
            progress_desc=f"mine {context.partition_key}",
        )
        multi_window_docs = model.window_stats.multi_window_docs
        executor_metadata = {"executor": "in-process", "inference_precision": model.precision}
    lines = len(docs) + len(corpus_rejects)
    if stats.docs_processed + stats.docs_rejected + len(corpus_rejects) != lines:
        raise dg.Failure(f"record count mismatch in {path}: {lines} input records, {stats.docs_processed} mined, "
                         f"{stats.docs_rejected + len(corpus_rejects)} rejected")
    rejects = [RejectRow(r.record_id, r.line_no, r.reason) for r in corpus_rejects] + plan_rejects
    with warehouse.get_connection() as conn:
        write_mining_partition(conn, task.name, file, rows, rejects,
                               Throughput(f"proxy ({file})", stats.docs_in, stats.seconds))
    preview = [[r.doc_id, r.field, r.value, r.start, r.end, round(r.score, 3)] for r in rows[:15]]
    yield dg.MaterializeResult(metadata={
        "rows": len(rows),
        "input_records": lines,
        "docs_mined": stats.docs_processed,
        "docs_retrieved": stats.docs_retrieved,
        "multi_window_docs": multi_window_docs,  # longer than the proxy's max_length
        "rejected_records": len(corpus_rejects) + stats.docs_rejected,
        "rows_per_field": dg.MetadataValue.json(stats.rows_per_field),
        "label_yes_counts": dg.MetadataValue.json({q: {"yes": y, "n": n} for q, (y, n) in yes_counts.items()}),
        "docs_per_s": round(stats.docs_per_s, 1),
        "seconds": round(stats.seconds, 1),
        "file_sha256": sha,
        "preview": dg.MetadataValue.md(md_table(["doc_id", "field", "value", "start", "end", "score"], preview)),
        **(_cascade_metadata(cascade, docs) if cascade is not None else {}),
        **executor_metadata,
    }, data_version=dg.DataVersion(rows_version(
        [(r.doc_id, r.field, r.value, r.start, r.end, round(r.score, 4), *([r.executor] if cascade else []))
         for r in rows])))
    yield _yes_rate_check(context, yes_counts, annotator, stats.docs_processed)


def _cascade_metadata(cascade: CascadePrimitives, docs) -> dict:
    """The cascade's share of LLM answers, documents routed, and the bands it used."""
    routed = sum(d.text in cascade.routed_texts for d in docs)
    return {
        "cascade_llm_share": round(cascade.llm_share, 4),
        "cascade_docs_to_llm": routed,
        "cascade_docs_to_llm_share": round(routed / len(docs), 4) if docs else 0.0,
        "cascade_bands": dg.MetadataValue.md(md_table(
            ["kind", "instruction", "low", "high", "guaranteed", "docs", "to LLM"],
            [[k, q, round(b.low, 4), round(b.high, 4), b.guaranteed, s.get("docs", 0), s.get("llm", 0)]
             for (k, q), b in cascade.bands.items() for s in [cascade.stats.get((k, q), {})]])),
    }


def _bands_version(checkpoint, precision: str) -> str:
    """The cascade bands' cache version: the checkpoint's, plus the inference precision when it is not fp32
    (bands calibrated on fp32 scores are not reused for bf16 / int8 ones)."""
    version = stored_version(checkpoint)
    return version if precision == "fp32" else f"{version}@{precision}"


def _executor(context: dg.AssetExecutionContext, cascade: bool) -> str:
    """``"in-process"`` or ``"ray"``, from ``FALCONER_EXECUTOR``; a task with a ``quality:`` block mines in-process.

    The cascade (LLM calls through the run's LLM resource and cache) has no Ray path yet: with
    ``FALCONER_EXECUTOR=ray`` such a task logs a warning and runs in-process.

    Raises:
        dg.Failure: ``FALCONER_EXECUTOR`` holds an unknown value.
    """
    try:
        executor = mining_executor()
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    if executor == "ray" and cascade:
        context.log.warning("FALCONER_EXECUTOR=ray: the cascade (quality: block) is not supported on Ray yet; "
                            "mining in-process")
        return "in-process"
    return executor


def _require_complete_checkpoint(checkpoint, task: str) -> None:
    """Raise ``dg.Failure`` naming the reason when ``checkpoint`` does not match its manifest (missing, half-written,
    truncated: :func:`~falconer_assets.proxy.checkpoint.checkpoint_problem`), so it is never loaded half."""
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        raise dg.Failure(f"the proxy checkpoint of task {task!r} cannot be used: {problem}. Re-materialize "
                         f"{task}/proxy_checkpoint (it retrains a damaged checkpoint).")


def _require_healthy_proxy(context: dg.AssetExecutionContext, task: str) -> None:
    """Raise ``dg.Failure`` when the latest ``proxy_checkpoint`` of ``task`` collapsed conclusively (``no_collapse``).

    A blocking check stops downstream steps of its own run only; ``mined`` runs in runs of its own
    (another partitions definition), so it reads the verdict from the materialization's metadata.
    A checkpoint materialized before the check existed has no verdict and is used.
    """
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=PROXY_CHECKPOINT, asset_partitions=[task]), limit=1).records
    if not records:
        return
    meta = records[0].asset_materialization.metadata
    verdict = meta.get("no_collapse")
    if verdict is not None and verdict.value is False:
        findings = meta["collapse_findings"].value if "collapse_findings" in meta else []
        raise dg.Failure(f"the proxy of task {task!r} failed its no_collapse check; not mining with it. "
                         + " ".join(findings), metadata={"collapse_findings": dg.MetadataValue.json(findings)})


def _yes_rate_check(context: dg.AssetExecutionContext, yes_counts: dict[str, list[int]],
                    annotator: dict[str, tuple[int, int]], n_docs: int) -> dg.AssetCheckResult:
    """The ``yes_rate`` check: each label instruction's proxy yes-rate against the annotator's interval.

    Only instructions the plan applied to every mined document are compared (a plan that asks a
    question of a filtered subset changes its yes-rate); the others are listed, not judged.
    """
    findings, table = [], []
    for q, (yes, n) in yes_counts.items():
        a_yes, a_n = annotator.get(q, (0, 0))
        compared = n >= n_docs > 0 and a_n > 0
        finding = yes_rate_finding(q, yes, n, a_yes, a_n) if compared else None
        if finding:
            findings.append(finding)
            context.log.warning(finding)
        table.append({"instruction": q, "proxy_yes": yes, "proxy_n": n, "annotator_yes": a_yes, "annotator_n": a_n,
                      "compared": compared, "outside_interval": finding is not None})
    return dg.AssetCheckResult(
        check_name=YES_RATE, asset_key=MINED, passed=not findings, severity=dg.AssetCheckSeverity.WARN,
        description=" ".join(findings) if findings else None,
        metadata={"counts": dg.MetadataValue.json(table), "findings": dg.MetadataValue.json(findings)})
