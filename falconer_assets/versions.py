"""Content hashes used as Dagster data versions (no Dagster import).

Every Falconer asset reports a data version computed from what it produced, so that an
upstream re-materialization with the same content (a comment-only plan edit, the same
annotation set) does not make anything downstream stale. See docs/lineage.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

VERSION_CHARS = 16
"""Hex characters kept from a SHA-256 digest (64 bits: collisions are not a practical concern here)."""


def digest(*parts: object) -> str:
    """SHA-256 over the canonical JSON of ``parts``, first :data:`VERSION_CHARS` hex characters.

    ``parts`` must be JSON-serializable (dict keys are sorted, so key order never matters).
    """
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:VERSION_CHARS]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Full hex SHA-256 of a file's bytes (read in 1 MiB chunks). Raises ``OSError`` if unreadable."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def task_spec_version(yaml_path: str | Path) -> str:
    """Version of a task's inputs: the bytes of ``<name>.yaml`` and, if present, of ``<name>.plan.py``.

    Any edit of either file changes it (including a comment-only edit of the plan file: the
    ``plan`` asset then re-runs, and its own AST-hash version decides whether anything
    downstream is stale).
    """
    yaml_path = Path(yaml_path)
    override = yaml_path.with_name(f"{yaml_path.stem}.plan.py")
    return digest(file_sha256(yaml_path), file_sha256(override) if override.exists() else None)


def task_labels_version(yaml_path: str | Path) -> str:
    """Version of a task's human labels: the bytes of ``<name>.labels.jsonl`` beside ``<name>.yaml``, or
    ``"none"`` when there is no such file. Any edit of the file changes it."""
    yaml_path = Path(yaml_path)
    labels = yaml_path.with_name(f"{yaml_path.stem}.labels.jsonl")
    return digest("labels", file_sha256(labels)) if labels.exists() else "none"


def rows_version(rows: Iterable[Iterable[object]]) -> str:
    """Version of a table slice: the sorted list of its rows (tuples of JSON-serializable values)."""
    return digest(sorted(json.dumps(list(r), default=str) for r in rows))
