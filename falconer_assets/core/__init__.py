"""Pure mining logic (no Dagster imports): spans, NTE codec, plan sandbox, planner prompts, metrics."""
