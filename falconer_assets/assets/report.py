"""Results to look at (issue 14, item 3): the ``report`` asset, one HTML page per task."""

import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.keys import EVAL, MINED, PROXY_CHECKPOINT, REPORT
from falconer_assets.assets.metadata import md_table
from falconer_assets.assets.proxy_checkpoint import TRAINING_CURVE_FILE
from falconer_assets.automation import on_change
from falconer_assets.partitions import TASKS
from falconer_assets.report.html import DocumentView, ReportData, render_report
from falconer_assets.resources.proxy import ProxyResource
from falconer_assets.resources.workspace import Workspace
from falconer_assets.versions import digest
from falconer_assets.warehouse.store import (
    mined_totals,
    mined_value_counts,
    read_eval_metrics,
    read_mined,
    sample_mined_docs,
)


class ReportConfig(dg.Config):
    """``sample_docs``: documents shown with their spans highlighted; ``top_values``: values listed per field."""

    sample_docs: int = 40
    top_values: int = 15


@dg.asset(
    key=REPORT,
    partitions_def=TASKS,
    deps=[dg.AssetDep(MINED, partition_mapping=dg.MultiToSingleDimensionPartitionMapping("task")), EVAL],
    automation_condition=on_change(),
    group_name="eval",
    kinds={"html"},
)
def report(context: dg.AssetExecutionContext, config: ReportConfig, workspace: Workspace, proxy: ProxyResource,
           warehouse: DuckDBResource) -> dg.MaterializeResult:
    """The task's results as a page to look at: `<data_dir>/reports/<task>.html`.

    A sample of mined documents (those with extracted spans first) with every mined span highlighted
    in place (hover for its field and score) and boolean fields as badges; the most frequent values
    per field; the `eval` table with 95% intervals and n; the proxy's dev score per epoch; the plan.
    Self-contained (inline CSS, the curve as an embedded PNG): open the `path` in the metadata in a
    browser. Data version: hash of the page.
    """
    task = workspace.task(context.partition_key)
    docs = workspace.corpus(task.corpus).by_id
    with warehouse.get_connection() as conn:
        plan = workspace.plan(conn, task.name)
        totals = mined_totals(conn, task.name)
        counts = mined_value_counts(conn, task.name, config.top_values)
        metrics = read_eval_metrics(conn, task.name)
        ids = [d for d in sample_mined_docs(conn, task.name, config.sample_docs) if d in docs]
        rows = read_mined(conn, task.name, ids)
    by_doc: dict[str, list] = {d: [] for d in ids}
    for r in rows:
        by_doc[r.doc_id].append(r)
    curve_file = proxy.checkpoint_path(task.name) / TRAINING_CURVE_FILE
    curve = json.loads(curve_file.read_text()) if curve_file.is_file() else []
    page = render_report(ReportData(
        task=task.name, instruction=task.instruction, corpus=task.corpus, plan_source=plan.source,
        totals=totals, metrics=metrics, value_counts=counts, curve=curve,
        documents=[DocumentView(d, docs[d].text, tuple(by_doc[d])) for d in ids],
        notes=[f"rows in the warehouse table <mined> (task = '{task.name}')"],
    ))
    out = workspace.path / "reports" / f"{task.name}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    top = [[f, ", ".join(f"{v} ({n})" for v, n in pairs[:5])] for f, pairs in counts.items()]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(digest(page)),
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "url": dg.MetadataValue.url(out.resolve().as_uri()),
            "documents_shown": len(ids),
            "rows_mined": totals["rows"],
            "top_values": dg.MetadataValue.md(md_table(["field", "most frequent values (rows)"], top)),
        },
    )

