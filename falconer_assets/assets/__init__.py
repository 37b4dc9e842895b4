"""Dagster assets, one module per stage; each module exposes a ``build_*`` factory per task/corpus."""
