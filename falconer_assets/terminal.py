"""What ``falconer run`` shows: one progress bar per stage, and nothing else on the terminal.

:func:`quiet_terminal` points the process's file descriptors 1 and 2 at a log file for the length of
a run, so everything libraries and child processes print (Dagster's event log, transformers' load
reports, Python warnings, the embedded llama.cpp server's log) lands in ``data/logs/`` instead of the
terminal; the progress bars (tqdm, one per :func:`falconer_assets.progress.progress` block: counts,
rate, ETA and the stage's latest values) and the final summary go to the terminal the user started
with. ``FALCONER_VERBOSE=1`` (``falconer run --verbose``) keeps the old behaviour: everything on the
terminal, no bars.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from falconer_assets import progress


class TqdmSink:
    """A :class:`~falconer_assets.progress.ProgressSink` drawing tqdm bars on ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def open(self, desc: str, total: int | None, unit: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, mininterval=0.5,
                    smoothing=0.1, leave=True)

    def update(self, handle, n: int, info: dict[str, object]) -> None:
        if info:
            handle.set_postfix(info, refresh=False)
        handle.update(n)

    def close(self, handle) -> None:
        handle.close()


def log_path(data_dir: Path, stamp: str | None = None) -> Path:
    """``<data_dir>/logs/falconer-run-<UTC time>.log`` (the folder is created)."""
    folder = data_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"falconer-run-{stamp or time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.log"


@contextmanager
def quiet_terminal(log_file: Path, verbose: bool = False) -> Iterator[TextIO]:
    """Send fds 1 and 2 (and Python logging and warnings) to ``log_file``; yield the terminal stream.

    Inside the block, progress blocks draw bars on the yielded stream. Child processes started inside
    inherit the log file as their stdout and stderr. On exit the descriptors, the progress sink and
    the logging set-up are restored, also after an exception (whose traceback Python then prints on
    the real terminal).

    Args:
        log_file: appended to; its folder must exist.
        verbose: do nothing (yield ``sys.stdout``): everything stays on the terminal, no bars.
    """
    if verbose:
        yield sys.stdout
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    term = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
    log = open(log_file, "a", encoding="utf-8", buffering=1)
    root = logging.getLogger()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    old_level = root.level
    previous_sink = None
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        previous_sink = progress.set_sink(TqdmSink(term))
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # every warning once per place, into the log
            yield term
    finally:
        progress.set_sink(previous_sink)
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(old_level)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        log.close()
        term.flush()
        term.close()
