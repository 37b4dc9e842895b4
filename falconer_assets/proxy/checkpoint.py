"""A task's proxy checkpoint on disk: training examples from annotations, the version it was trained
for, and an atomic, verifiable save (no Dagster).

A checkpoint folder holds the model (:meth:`NTEProxy.save`) and :data:`VERSION_FILE`, its manifest: the
data version of the inputs it was trained on (:func:`checkpoint_version`) and the size and SHA-256 of every
file of the model. When a new materialization would train on exactly the same inputs, the folder is reused
instead of retrained.

Crash safety: :func:`save_checkpoint` writes the whole folder under a temporary sibling name, flushes it to
disk, writes the manifest last, and only then renames it into place; :func:`checkpoint_problem` checks a
folder against its manifest (every listed file present with its size and hash). A folder that fails the
check (half-copied, truncated, a file edited or deleted, no manifest) has no :func:`stored_version`, so
``proxy_checkpoint`` retrains it, and :func:`verify_checkpoint` refuses it, so it is never loaded half.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from falconer_assets.inputs.corpus import Document
from falconer_assets.proxy.model import NTEProxy, TrainExample
from falconer_assets.osutil import fsync_path, pid_exists
from falconer_assets.proxy.training import TrainConfig
from falconer_assets.versions import digest, file_sha256
from falconer_assets.warehouse.rows import AnnotationRow

VERSION_FILE = "falconer_version.json"
"""The manifest of a checkpoint folder, written last: ``{"version", "inputs", "files": {relative path:
{"size": bytes, "sha256": hex}}}`` (the data version it was trained for, its inputs, and every other file
of the folder as written)."""

STALE_TMP_AGE_S = 24 * 3600.0
"""A temporary checkpoint folder older than this (seconds) is removed even when its writer's liveness cannot
be checked (a writer on another machine sharing the folder)."""

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete or damaged (the message says which file and how)."""


def training_examples(rows: Sequence[AnnotationRow], docs: Mapping[str, Document]) -> tuple[list[TrainExample], int]:
    """Annotation rows -> proxy examples, in row order.

    Returns:
        ``(examples, skipped)``: rows of docs no longer in ``docs`` and label rows whose reply was
        unparseable are skipped and counted.
    """
    out, skipped = [], 0
    for r in rows:
        if r.doc_id not in docs or not r.usable:
            skipped += 1
        elif r.kind == "label":
            out.append(TrainExample("label", docs[r.doc_id].text, r.instruction, label=bool(r.label)))
        else:
            out.append(TrainExample("span", docs[r.doc_id].text, r.instruction, spans=list(r.spans)))
    return out, skipped


def checkpoint_version(annotation_version: str, base: dict, recipe: TrainConfig, code_version: str) -> tuple[str, dict]:
    """Data version of a proxy checkpoint, and what went into it.

    ``digest`` of the task's annotation set version, the base model (``base``: its name and
    resolved folder name, or the earlier task's checkpoint version for continual integration),
    the training recipe and the training code version. Equal versions mean training would see
    exactly the same inputs.
    """
    inputs = {"annotations": annotation_version, "base": base, "recipe": recipe.model_dump(),
              "code_version": code_version}
    return digest(inputs), inputs


def checkpoint_problem(folder: str | Path, hashes: bool = True) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or ``None`` when it is one.

    Complete: the folder holds :data:`VERSION_FILE` with a version and a file list, and every listed file
    exists with the listed size and (``hashes``) SHA-256. Files not in the list (e.g. the cascade's cached
    bands) are ignored. Hashing reads every file once (about 0.2 s for a 90 MB MiniLM checkpoint).

    Returns:
        ``None``, or a one-line reason such as ``"model.safetensors has 1024 bytes, the manifest says 90868376"``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return f"no checkpoint folder {folder}"
    manifest_path = folder / VERSION_FILE
    if not manifest_path.is_file():
        return f"no manifest {VERSION_FILE} in {folder} (half-written, or saved by an older version)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable manifest {manifest_path}: {e}"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files or not isinstance(manifest.get("version"), str):
        return f"the manifest {manifest_path} lists no files (saved by an older version)"
    for rel, want in sorted(files.items()):
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != want.get("size"):
            return f"{rel} has {size} bytes, the manifest says {want.get('size')}"
        if hashes and file_sha256(path) != want.get("sha256"):
            return f"{rel} does not match its SHA-256 in the manifest"
    return None


def verify_checkpoint(folder: str | Path) -> str:
    """The version of the complete checkpoint ``folder`` (see :func:`checkpoint_problem`).

    Raises:
        CheckpointError: the folder is missing, incomplete or damaged; the message names the folder and
            the reason.
    """
    problem = checkpoint_problem(folder)
    if problem is not None:
        raise CheckpointError(f"proxy checkpoint {folder} cannot be used: {problem}")
    return json.loads((Path(folder) / VERSION_FILE).read_text())["version"]


def stored_version(folder: str | Path) -> str | None:
    """The version recorded in a checkpoint folder; ``None`` for no folder, or one that fails
    :func:`checkpoint_problem` (incomplete or damaged: it must be retrained, not reused)."""
    if checkpoint_problem(folder) is not None:
        return None
    return json.loads((Path(folder) / VERSION_FILE).read_text()).get("version")


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary siblings (``.<name>.<host>.<pid>.tmp`` / ``.old``, and ``<name>.tmp`` of older
    versions) that a save of checkpoint ``folder`` left behind when its process died.

    A sibling is removed when its writer ran on this machine and no longer exists, or when it is older than
    :data:`STALE_TMP_AGE_S`; the temporary folder of a live save is never touched.

    Returns:
        The paths removed.
    """
    out = Path(folder)
    if not out.parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{out.name}.") + r"(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?:tmp|old)")
    removed = []
    now = time.time()
    for path in out.parent.iterdir():
        m = pattern.fullmatch(path.name)
        if m is not None:
            mine = m.group("host") == _HOST
            pid = int(m.group("pid"))
            dead = mine and pid != os.getpid() and not pid_exists(pid)
        elif path.name == f"{out.name}.tmp":  # the fixed temporary name of older versions
            dead = True
        else:
            continue
        try:
            old = now - path.stat().st_mtime > STALE_TMP_AGE_S
        except FileNotFoundError:
            continue
        if dead or old:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def write_checkpoint(folder: str | Path, write: Callable[[Path], None], version: str, inputs: dict) -> Path:
    """Write a checkpoint folder atomically, with its manifest.

    ``write(tmp)`` fills the temporary sibling folder ``.<name>.<host>.<pid>.tmp``; then every file in it is
    flushed to disk and listed with its size and SHA-256 in :data:`VERSION_FILE`, written last; only then is
    the folder renamed onto ``folder`` (an existing one is moved aside first and removed after). A crash at
    any point leaves either the old complete folder, no folder, or the new complete folder under ``folder``,
    never a half-written one; the temporary siblings of dead saves are removed (:func:`remove_stale_temps`).

    Args:
        folder: the checkpoint folder, e.g. ``data/checkpoints/<task>``.
        write: fills the folder it is given (e.g. :meth:`NTEProxy.save`); must not write :data:`VERSION_FILE`.
        version, inputs: the checkpoint's data version and what went into it (:func:`checkpoint_version`).

    Returns:
        ``folder`` as a ``Path``.

    Raises:
        Whatever ``write`` raises (the temporary folder is removed; ``folder`` is untouched).
    """
    out = Path(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    tag = f"{_HOST}.{os.getpid()}"
    tmp = out.with_name(f".{out.name}.{tag}.tmp")
    old = out.with_name(f".{out.name}.{tag}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = path.relative_to(tmp).as_posix()
            if rel == VERSION_FILE:
                continue
            fsync_path(path)
            files[rel] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
        manifest = tmp / VERSION_FILE
        manifest.write_text(json.dumps({"version": version, "inputs": inputs, "files": files}, indent=1,
                                       default=str))
        fsync_path(manifest)
        for d in sorted({p.parent for p in tmp.rglob("*")} | {tmp}):
            fsync_path(d, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    fsync_path(out.parent, directory=True)
    shutil.rmtree(old, ignore_errors=True)
    return out


def save_checkpoint(model: NTEProxy, folder: str | Path, version: str, inputs: dict) -> Path:
    """Save ``model`` and its manifest into ``folder`` atomically (:func:`write_checkpoint` with
    :meth:`NTEProxy.save`), so an interrupted save never leaves a folder that looks finished."""
    return write_checkpoint(folder, model.save, version, inputs)
