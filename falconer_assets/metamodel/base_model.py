"""The proxy base names users can give (``ProxyResource.base_model``, ``FALCONER_PROXY_BASE``).

* ``""`` / ``"metamodel"`` (the default): our own NTE-pretrained MiniLM, built once by
  ``python -m falconer_assets.metamodel build`` and cached (:mod:`falconer_assets.metamodel.pretrain`);
* ``"minilm"``, ``"mpnet"``, ``"cuckoo"`` or any hub id / local directory: an encoder
  (:func:`falconer_assets.proxy.encoders.resolve_encoder`).
"""

from __future__ import annotations

from falconer_assets.metamodel.pretrain import require_metamodel
from falconer_assets.proxy.encoders import resolve_encoder


def resolve_base_model(name: str) -> str:
    """Turn a base-model name (module docstring) into a ``from_pretrained`` argument.

    Raises:
        FileNotFoundError: for ``"metamodel"`` when it has not been built yet; the message
            gives the build command.
        ImportError: for ``"minilm"`` / ``"mpnet"`` when their packages are missing.
    """
    if (name or "metamodel").strip().lower() == "metamodel":
        return str(require_metamodel())
    return resolve_encoder(name)
