"""Opening a DuckDB file that another process may hold: a bounded wait, then a clear error.

DuckDB lets one process at a time open a database file for writing (and no other process may open it at
all while it is held, not even read-only). Falconer's warehouse (``data/falconer.duckdb``) and LLM cache
(``data/llm_cache.duckdb``) are opened for short moments, so two Falconer processes (``dagster dev`` and
``falconer run`` on the same data folder) mostly take turns; :func:`connect` retries with exponential
backoff while the file is locked, and when the lock is still held after ``wait_s`` seconds raises
:class:`DatabaseLockedError`, whose message names the file, the process holding it (PID and command line,
read from DuckDB's own error and ``/proc``) and what to do. No Dagster here.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb

DEFAULT_LOCK_WAIT_S = 60.0
"""Seconds :func:`connect` waits for another process to release a locked DuckDB file by default."""

_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


class DatabaseLockedError(RuntimeError):
    """A DuckDB file stayed locked by another process for longer than the wait.

    Attributes:
        path: the database file.
        pid: the process holding the lock (``None`` when DuckDB did not say).
        holder: a description of that process (its command line when readable, else its executable).
        waited_s: seconds waited before giving up.
    """

    def __init__(self, path: Path, pid: int | None, holder: str, waited_s: float) -> None:
        self.path, self.pid, self.holder, self.waited_s = Path(path), pid, holder, float(waited_s)
        who = f"process {pid} ({holder})" if pid is not None else (holder or "another process")
        super().__init__(
            f"the DuckDB file {self.path} is locked by {who}; waited {self.waited_s:.0f} s for it. DuckDB lets one "
            f"process at a time open a file for writing: is `dagster dev` or another `falconer run` working on this "
            f"data folder? Wait for its run to finish or stop it, then try again.")


def lock_holder(error: BaseException) -> tuple[int | None, str]:
    """``(pid, description)`` of the process holding a DuckDB file, parsed from DuckDB's lock ``error``.

    The description is the holder's command line (``/proc/<pid>/cmdline``, at most 200 characters) when
    readable, else the executable DuckDB names; ``(None, "")`` when the message names no process.
    """
    m = _HOLDER.search(str(error))
    if m is None:
        return None, ""
    pid = int(m.group("pid"))
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        cmdline = " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)
    except OSError:
        cmdline = ""
    desc = cmdline or m.group("exe")
    return pid, desc if len(desc) <= 200 else desc[:197] + "..."


def is_lock_error(error: BaseException) -> bool:
    """True when ``error`` is DuckDB's "Could not set lock on file" (another process holds the file)."""
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def connect(path: str | Path, *, read_only: bool = False, wait_s: float = DEFAULT_LOCK_WAIT_S,
            config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect(path)``, retried while another process holds the file's lock.

    Args:
        path: the database file (``":memory:"`` is connected at once).
        read_only: open read-only (still refused while another process holds the file for writing).
        wait_s: how long to keep retrying, seconds; the delays double from 0.05 s up to 1 s.
        config: DuckDB configuration options passed to ``duckdb.connect``.

    Returns:
        An open connection; the caller closes it.

    Raises:
        DatabaseLockedError: the file is still locked after ``wait_s`` seconds (the message names the file
            and the holding process).
        duckdb.Error: any other failure to open the file.
    """
    t0 = time.monotonic()
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config or {})
        except duckdb.IOException as e:
            if not is_lock_error(e):
                raise
            waited = time.monotonic() - t0
            if waited >= wait_s:
                pid, holder = lock_holder(e)
                raise DatabaseLockedError(Path(path), pid, holder, waited) from None
            time.sleep(min(delay, max(wait_s - waited, 0.0)))
            delay = min(delay * 2, 1.0)
