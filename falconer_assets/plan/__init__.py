"""Plans (paper section 3.4): the planner's prompts and retries, and the sandbox that validates a plan's
AST and runs it with only ``get_label``/``get_span``. No Dagster."""
