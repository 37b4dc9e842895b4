"""Metamodel: NTE pre-training of the proxy base on labelled offline data, and the quality benchmark (pure Python, no Dagster)."""
