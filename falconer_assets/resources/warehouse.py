"""The warehouse as a Dagster resource: ``dagster_duckdb``'s ``DuckDBResource`` with a clear error when another
process holds the DuckDB file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from falconer_assets.warehouse.connect import DEFAULT_LOCK_WAIT_S, DatabaseLockedError, connect


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse (``data/falconer.duckdb``); assets use ``get_connection()`` as with ``DuckDBResource``.

    DuckDB lets one process at a time hold the file (``dagster dev`` and ``falconer run`` on the same data
    folder take turns: every asset opens it for short moments). ``get_connection`` waits up to ``lock_wait_s``
    seconds for another process to let go, retrying with backoff; then the step fails with a ``dg.Failure``
    that names the file and the process holding it (PID and command line) and says what to do, instead of
    DuckDB's raw ``IOException``.
    """

    lock_wait_s: float = Field(default=DEFAULT_LOCK_WAIT_S,
                               description="Seconds to wait for another process holding the DuckDB file.")

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An open write connection, closed on exit.

        Raises:
            dg.Failure: the file stayed locked by another process for ``lock_wait_s`` seconds (metadata
                ``database``, ``holder_pid``, ``holder``, ``waited_s``).
        """
        try:
            conn = connect(self.database, wait_s=self.lock_wait_s,
                           config={"custom_user_agent": "dagster", **self.connection_config})
        except DatabaseLockedError as exc:
            raise dg.Failure(description=str(exc), metadata={
                "database": str(exc.path), "holder_pid": exc.pid if exc.pid is not None else -1,
                "holder": exc.holder, "waited_s": round(exc.waited_s, 1)}) from None
        try:
            yield conn
        finally:
            conn.close()
