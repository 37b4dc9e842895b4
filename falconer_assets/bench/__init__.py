"""Benchmarks that print a table: ``python -m falconer_assets.bench quality [--quick]``."""
