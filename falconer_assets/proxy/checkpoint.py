"""A task's proxy checkpoint on disk: training examples from annotations, the version it was trained
for, and an atomic save (no Dagster).

A checkpoint folder holds the model (:meth:`NTEProxy.save`) and :data:`VERSION_FILE`, the data
version of the inputs it was trained on (:func:`checkpoint_version`). When a new materialization
would train on exactly the same inputs, the folder is reused instead of retrained.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from falconer_assets.inputs.corpus import Document
from falconer_assets.proxy.model import NTEProxy, TrainExample
from falconer_assets.proxy.training import TrainConfig
from falconer_assets.versions import digest
from falconer_assets.warehouse.rows import AnnotationRow

VERSION_FILE = "falconer_version.json"
"""Written into each checkpoint folder: the data version it was trained for, and its inputs."""


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


def stored_version(folder: str | Path) -> str | None:
    """The version recorded in a checkpoint folder (``None``: no folder, or one without a version)."""
    path = Path(folder) / VERSION_FILE
    return json.loads(path.read_text()).get("version") if path.is_file() else None


def save_checkpoint(model: NTEProxy, folder: str | Path, version: str, inputs: dict) -> Path:
    """Save ``model`` and its version into ``folder``, atomically: written to ``<folder>.tmp``, then renamed,
    so an interrupted save never leaves a folder that looks finished."""
    out = Path(folder)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    (tmp / VERSION_FILE).write_text(json.dumps({"version": version, "inputs": inputs}, indent=1, default=str))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
