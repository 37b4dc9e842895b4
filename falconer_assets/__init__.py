"""Falconer: instruction-driven knowledge mining (LLM planner + annotator, small NTE proxy) as Dagster assets."""
