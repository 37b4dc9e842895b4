"""Dagster resources (thin wrappers over ``falconer_assets.core``)."""

from falconer_assets.resources.llm import LLMResource

__all__ = ["LLMResource"]
