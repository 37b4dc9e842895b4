"""Plans (paper section 3.4): the planner's prompts and retries, the sandbox that validates a plan's
AST, the limits a plan batch runs under, and the limited worker process that runs it with only
``get_label``/``get_span`` (served from the calling process). Standard library only, no Dagster."""
