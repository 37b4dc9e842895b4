"""The DuckDB warehouse (``data/falconer.duckdb``): its tables, the typed rows stored in them, and every
SQL statement that reads or writes them. No Dagster."""
