"""Untrusted inputs, read and validated: corpus files (JSON Lines) and task files (YAML). No Dagster."""
