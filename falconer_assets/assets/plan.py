"""Stage 1, planner (paper 3.4): the ``plan`` asset, instruction -> validated plan."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.keys import PLAN, TASK_SPEC
from falconer_assets.assets.metadata import md_table
from falconer_assets.automation import on_change
from falconer_assets.inputs.tasks import QualityTarget
from falconer_assets.partitions import TASKS
from falconer_assets.plan.planner import PLANNER_MAX_TOKENS, plan_with_retries
from falconer_assets.plan.sandbox import PlanValidationError
from falconer_assets.resources.llm import LLMResource
from falconer_assets.resources.workspace import Workspace
from falconer_assets.versions import digest, task_spec_version
from falconer_assets.warehouse.rows import PlanRecord
from falconer_assets.warehouse.store import write_plan



def plan_data_version(ast_hash: str, quality: QualityTarget | None) -> str:
    """The plan's data version: its AST hash, plus the task's cascade target when it has one."""
    if quality is None:
        return ast_hash[:16]
    return f"{ast_hash[:16]}-q{digest(quality.model_dump())[:8]}"


@dg.asset(
    key=PLAN,
    partitions_def=TASKS,
    deps=[TASK_SPEC],
    automation_condition=on_change(),
    group_name="planner",
    kinds={"python"},
    check_specs=[dg.AssetCheckSpec("has_primitive_calls", asset=PLAN, blocking=True)],
)
def plan(context: dg.AssetExecutionContext, workspace: Workspace, llm: LLMResource, warehouse: DuckDBResource):
    """The task's plan: Python that uses only get_label/get_span, written by the LLM planner.

    Reads `data/tasks/<task>.yaml` at run time. Uses `<task>.plan.py` beside it when present
    (validated the same way), else asks the LLM planner with up to 3 attempts, feeding
    validation errors back. The plan is stored in the warehouse table `plans`, where `annotations`,
    `eval` and `mined` read it. Data version: the hash of the normalized plan AST, so a comment or
    whitespace edit changes nothing downstream; with a `quality:` block in the task file, plus the
    block's hash, so editing the cascade target re-runs `mined` and `eval` (the annotations and the
    proxy keep their versions: nothing is re-annotated or retrained). Blocking check `has_primitive_calls` fails when
    the plan makes no get_label/get_span call.
    """
    task = workspace.task(context.partition_key)
    override = task.plan_override_path
    if override.exists():
        validated = workspace.validate(override.read_text(encoding="utf-8"), str(override))
        origin, attempts = f"user file {override.name}", []
    else:
        try:
            validated, attempts = plan_with_retries(
                lambda messages, **params: llm.chat(messages, max_tokens=PLANNER_MAX_TOKENS, **params).text,
                task.instruction,
                task.fields_as_dicts(),
            )
        except PlanValidationError as exc:
            raise dg.Failure(f"planner produced no valid plan for task {task.name!r}: {exc}") from exc
        origin = "llm"
        for i, a in enumerate(attempts, 1):
            if a.error:
                context.log.warning(f"plan attempt {i} rejected: {a.error}")
    calls = tuple((c.kind, c.instruction) for c in validated.calls)
    with warehouse.get_connection() as conn:
        write_plan(conn, PlanRecord(task.name, validated.source, validated.ast_hash, calls, origin))
    yield dg.MaterializeResult(
        asset_key=PLAN,
        metadata={
            "plan": dg.MetadataValue.md(f"```python\n{validated.source}\n```"),
            "instruction": task.instruction,
            "task_spec_version": task_spec_version(task.path),
            "sub_tasks": dg.MetadataValue.md(md_table(["kind", "instruction"], [list(c) for c in calls])),
            "num_calls": len(calls),
            "origin": origin,
            "attempts": len(attempts),
            "ast_hash": validated.ast_hash,
        },
        data_version=dg.DataVersion(plan_data_version(validated.ast_hash, task.quality)),
    )
    yield dg.AssetCheckResult(
        check_name="has_primitive_calls", asset_key=PLAN, passed=len(calls) > 0, metadata={"num_calls": len(calls)},
    )
