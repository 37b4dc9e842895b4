"""Stage 1, planner (paper 3.4): instruction -> validated plan source."""


import json
from datetime import datetime, timezone

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.common import md_table, parse_plan, task_for_partition
from falconer_assets.assets.sources import TASK_SPEC
from falconer_assets.automation import on_change
from falconer_assets.plan.sandbox import PlanValidationError
from falconer_assets.plan.planner import plan_with_retries
from falconer_assets.warehouse.tables import replace_rows
from falconer_assets.versions import task_spec_version
from falconer_assets.partitions import TASKS
from falconer_assets.resources.llm import LLMResource

PLANNER_MAX_TOKENS = 768


def build_plan_asset(data_dir) -> dg.AssetsDefinition:
    """The ``plan`` asset (one partition per task): the plan source (a ``str``).

    Reads ``<data_dir>/tasks/<task>.yaml`` at run time. Uses ``<task>.plan.py`` beside it when
    present (validated the same way), else asks the LLM planner with up to 3 attempts, feeding
    validation errors back. Data version: the hash of the normalized plan AST, so a comment or
    whitespace edit changes nothing downstream. Blocking check ``has_primitive_calls`` fails
    when the plan makes no get_label/get_span call.
    """
    key = dg.AssetKey("plan")

    @dg.asset(
        key=key,
        partitions_def=TASKS,
        deps=[TASK_SPEC],
        automation_condition=on_change(),
        group_name="planner",
        kinds={"python"},
        description="Plan (Python using get_label/get_span) written by the LLM planner for the task's instruction",
        check_specs=[dg.AssetCheckSpec("has_primitive_calls", asset=key, blocking=True)],
    )
    def plan(context: dg.AssetExecutionContext, llm: LLMResource, warehouse: DuckDBResource):
        task = task_for_partition(data_dir, context.partition_key)
        override = task.plan_override_path
        if override.exists():
            validated = parse_plan(override.read_text(encoding="utf-8"), str(override))
            origin, attempts = f"user file {override.name}", []
        else:
            try:
                validated, attempts = plan_with_retries(
                    lambda messages: llm.chat(messages, max_tokens=PLANNER_MAX_TOKENS).text,
                    task.instruction,
                    task.fields_as_dicts(),
                )
            except PlanValidationError as exc:
                raise dg.Failure(f"planner produced no valid plan for task {task.name!r}: {exc}") from exc
            origin = "llm"
            for i, a in enumerate(attempts, 1):
                if a.error:
                    context.log.warning(f"plan attempt {i} rejected: {a.error}")
        calls = [{"kind": c.kind, "instruction": c.instruction} for c in validated.calls]
        with warehouse.get_connection() as conn:
            replace_rows(conn, "plans", "task", task.name, [{
                "task": task.name, "source": validated.source, "ast_hash": validated.ast_hash,
                "calls": json.dumps(calls), "origin": origin, "created_at": datetime.now(timezone.utc),
            }])
        yield dg.Output(
            validated.source,
            metadata={
                "plan": dg.MetadataValue.md(f"```python\n{validated.source}\n```"),
                "instruction": task.instruction,
                "task_spec_version": task_spec_version(task.path),
                "sub_tasks": dg.MetadataValue.md(md_table(["kind", "instruction"], [[c["kind"], c["instruction"]] for c in calls])),
                "num_calls": len(calls),
                "origin": origin,
                "attempts": len(attempts),
                "ast_hash": validated.ast_hash,
            },
            data_version=dg.DataVersion(validated.ast_hash[:16]),
        )
        yield dg.AssetCheckResult(
            check_name="has_primitive_calls", asset_key=key, passed=len(calls) > 0,
            metadata={"num_calls": len(calls)},
        )

    return plan
