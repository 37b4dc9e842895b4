"""The proxy training/inference settings as a Dagster resource."""

from __future__ import annotations

import dagster as dg

from falconer_assets.proxy.encoders import resolve_base_model
from falconer_assets.proxy.model import FINE_TUNE_RECIPE, TrainConfig, resolve_device


class ProxyResource(dg.ConfigurableResource):
    """Which base model the NTE proxy starts from, where it runs, and its training recipe.

    Attributes:
        base_model: ``""`` / ``"metamodel"`` for the offline default, our NTE-pretrained
            MiniLM (built once by ``python -m falconer_assets.metamodel build``);
            ``"minilm"`` / ``"mpnet"`` for the plain encoders from pip packages; ``"cuckoo"``
            for ``KomeijiForce/Cuckoo-C4-Super-Rainbow`` (needs network access to the Hugging
            Face hub); or any hub id / local directory
            (:func:`~falconer_assets.proxy.encoders.resolve_base_model`).
        device: ``"auto"`` (``cuda`` when available, else ``cpu``), ``"cpu"`` or ``"cuda"``.
        epochs, lr, head_lr, batch_size, tag_weight, max_length, seed, dev_fraction, patience:
            see :class:`~falconer_assets.proxy.model.TrainConfig`; defaults are
            :data:`~falconer_assets.proxy.model.FINE_TUNE_RECIPE`, chosen from the measurements
            in docs/proxy.md (15% of the training annotations become the dev split for early
            stopping; the held-out annotations stay untouched for ``eval``). They suit an
            NTE-pretrained base; for a plain encoder (``minilm``, ``mpnet``) use
            :data:`~falconer_assets.proxy.model.FRESH_HEAD_RECIPE` (lr 3e-4, head_lr 3e-3,
            tag_weight 5), or its fresh head learns all O / all No.
        init_from_task: continual integration (paper 5.2): start from another task's
            fine-tuned checkpoint instead of the base model; ``""`` = from the base.
        inference_batch_size: texts per forward pass when mining.
        checkpoint_dir: where fine-tuned checkpoints are saved, one sub-folder per task.
    """

    base_model: str = ""
    device: str = "auto"
    epochs: int = FINE_TUNE_RECIPE.epochs
    lr: float = FINE_TUNE_RECIPE.lr
    head_lr: float | None = FINE_TUNE_RECIPE.head_lr
    batch_size: int = FINE_TUNE_RECIPE.batch_size
    tag_weight: float = FINE_TUNE_RECIPE.tag_weight
    max_length: int = FINE_TUNE_RECIPE.max_length
    seed: int = FINE_TUNE_RECIPE.seed
    dev_fraction: float = FINE_TUNE_RECIPE.dev_fraction
    patience: int = 3
    init_from_task: str = ""
    inference_batch_size: int = 64
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
        """The training recipe as a :class:`TrainConfig`."""
        return TrainConfig(
            epochs=self.epochs, lr=self.lr, head_lr=self.head_lr, batch_size=self.batch_size,
            tag_weight=self.tag_weight, max_length=self.max_length, seed=self.seed,
            dev_fraction=self.dev_fraction, min_dev=FINE_TUNE_RECIPE.min_dev, patience=self.patience,
        )
