"""The LLM runtime (planner and annotator of paper sections 3.4-3.5): an OpenAI-compatible chat client
with a call cache, the embedded llama.cpp server, the annotation prompts and the LLM executor of the
two primitives. No Dagster."""
