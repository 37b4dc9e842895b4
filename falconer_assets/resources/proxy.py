"""The proxy's base model, device and training recipe as a Dagster resource."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from falconer_assets.metamodel.base_model import resolve_base_model
from falconer_assets.proxy.model import resolve_device
from falconer_assets.proxy.training import TrainConfig


class ProxyResource(dg.ConfigurableResource, TrainConfig):
    """Which base model the NTE proxy starts from, where it runs, and its training recipe.

    The training fields (epochs, lr, head_lr, batch_size, max_length, seed, weight_decay,
    warmup_ratio, tag_weight, dev_fraction, min_dev, patience, max_steps) are those of
    :class:`~falconer_assets.proxy.training.TrainConfig`, inherited, with its defaults
    (:data:`~falconer_assets.proxy.training.FINE_TUNE_RECIPE`: 15% of the training annotations
    become the dev split for early stopping; the held-out annotations stay untouched for
    ``eval``). They suit an NTE-pretrained base; for a plain encoder (``minilm``, ``mpnet``) use
    :data:`~falconer_assets.proxy.training.FRESH_HEAD_RECIPE` (lr 3e-4, head_lr 3e-3,
    tag_weight 5), or its fresh head learns all O / all No.

    Attributes:
        base_model: ``""`` / ``"metamodel"`` for the offline default, our NTE-pretrained
            MiniLM (built once by ``python -m falconer_assets.metamodel build``);
            ``"minilm"`` / ``"mpnet"`` for the plain encoders from pip packages; ``"cuckoo"``
            for ``KomeijiForce/Cuckoo-C4-Super-Rainbow`` (needs network access to the Hugging
            Face hub); or any hub id / local directory
            (:func:`~falconer_assets.metamodel.base_model.resolve_base_model`).
        device: ``"auto"`` (``cuda`` when available, else ``cpu``), ``"cpu"`` or ``"cuda"``.
        init_from_task: continual integration (paper 5.2): start from another task's
            fine-tuned checkpoint instead of the base model; ``""`` = from the base.
        inference_batch_size: texts per forward pass when mining.
        inference_precision: the precision ``mined`` and ``eval`` run the proxy at (``eval``'s F1 is the F1
            of what mines): ``"auto"`` (default: bf16 on CUDA and on CPUs with native bfloat16, AVX512-BF16
            or AMX, else fp32), ``"fp32"``, ``"bf16"`` or ``"int8"`` (CPU only). Training and checkpoints
            stay float32. Chosen by ``python -m falconer_assets.bench inference`` (``docs/bench/inference.md``;
            :mod:`falconer_assets.proxy.precision`).
        checkpoint_dir: where fine-tuned checkpoints are saved, one sub-folder per task.
    """

    base_model: str = ""
    device: str = "auto"
    init_from_task: str = ""
    inference_batch_size: int = 64
    inference_precision: str = "auto"
    checkpoint_dir: str = "data/checkpoints"

    def resolved_base_model(self) -> str:
        """The ``from_pretrained`` argument for :attr:`base_model`.

        Raises:
            FileNotFoundError: the default metamodel has not been built yet (message names the
                build command).
        """
        return resolve_base_model(self.base_model)

    def resolved_device(self) -> str:
        """``cuda`` or ``cpu`` (see :func:`~falconer_assets.proxy.model.resolve_device`)."""
        return resolve_device(self.device)

    def train_config(self) -> TrainConfig:
        """The training recipe: this resource's :class:`TrainConfig` fields."""
        return TrainConfig(**{name: getattr(self, name) for name in TrainConfig.model_fields})

    def checkpoint_path(self, task: str) -> Path:
        """Folder of ``task``'s fine-tuned checkpoint: ``<checkpoint_dir>/<task>``."""
        return Path(self.checkpoint_dir) / task
