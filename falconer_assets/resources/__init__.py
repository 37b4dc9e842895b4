"""Dagster resources: the data folder (:class:`~falconer_assets.resources.workspace.Workspace`), the LLM and
the proxy settings; thin wrappers over the domain packages below the Dagster layer."""
