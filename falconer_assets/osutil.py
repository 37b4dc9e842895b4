"""Two OS helpers shared by the crash-safe writers (checkpoints, Parquet parts) and the run monitor.

Standard library only (a primitive: every layer may use it).
"""

from __future__ import annotations

import os
from pathlib import Path


def pid_exists(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie, killed but not yet reaped, counts;
    one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_path(path: Path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or with ``directory`` a folder's entries) to disk; a no-op where the OS
    refuses (e.g. a folder on some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
