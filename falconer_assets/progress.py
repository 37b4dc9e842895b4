"""Progress of long work (LLM calls, training steps, documents mined), for whoever shows it.

Stages report progress here, not to a terminal: ``with progress("LLM annotation", total=n, unit="call")
as p: ... p.update(k, cache_hits=3)``. Nothing listens by default (a Dagster run started from the web
UI keeps its log lines); ``falconer run`` installs a sink that draws one bar per stage with counts,
rate and ETA (:mod:`falconer_assets.terminal`). Standard library only, so every layer may use it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressSink(Protocol):
    """Receives the progress of every :func:`progress` block while installed (:func:`set_sink`)."""

    def open(self, desc: str, total: int | None, unit: str) -> object:
        """A block started: ``total`` units expected (None: unknown); returns a handle for the other calls."""

    def update(self, handle: object, n: int, info: dict[str, object]) -> None:
        """``n`` more units done; ``info``: the latest values to show beside the bar (e.g. loss, rows)."""

    def close(self, handle: object) -> None:
        """The block ended (normally or by an exception)."""


_lock = threading.Lock()
_sink: ProgressSink | None = None


def set_sink(sink: ProgressSink | None) -> ProgressSink | None:
    """Install ``sink`` (None: nobody listens) for the whole process; returns the previous one."""
    global _sink
    with _lock:
        previous, _sink = _sink, sink
    return previous


class Progress:
    """One block of work in progress (see :func:`progress`); ``update`` is cheap when nobody listens."""

    def __init__(self, sink: ProgressSink | None, handle: object) -> None:
        self._sink, self._handle = sink, handle
        self.done = 0

    def update(self, n: int = 1, **info: object) -> None:
        """Record ``n`` more units done (``n`` may be 0 to refresh ``info`` only)."""
        self.done += n
        if self._sink is not None:
            self._sink.update(self._handle, n, info)


@contextmanager
def progress(desc: str, total: int | None, unit: str = "it") -> Iterator[Progress]:
    """A block of ``total`` units of work named ``desc`` (e.g. ``"train proxy"``, ``total=steps``).

    Raises nothing of its own; an exception inside the block closes the bar and propagates.
    """
    sink = _sink
    handle = sink.open(desc, total, unit) if sink is not None else None
    try:
        yield Progress(sink, handle)
    finally:
        if sink is not None:
            sink.close(handle)
