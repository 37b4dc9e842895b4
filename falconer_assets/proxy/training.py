"""The proxy's training configuration and its named recipes (no torch, no Dagster).

Evidence for the recipes' values is in docs/proxy.md (issue 2 and 3 measurements).
"""

from __future__ import annotations

from typing import Literal

import pydantic


class TrainConfig(pydantic.BaseModel):
    """Fine-tuning hyper-parameters: the one training-config type of Falconer.

    Used by task fine-tuning (``ProxyResource`` inherits these fields as its config, so the
    Dagster launchpad shows them), by the metamodel's pre-training (``PretrainRecipe.train``)
    and by ``bench quality``. The defaults are :data:`FINE_TUNE_RECIPE`; a frozen pydantic
    model, so derive variants with ``model_copy(update={...})``.

    Attributes:
        epochs: passes over the examples.
        lr: peak AdamW learning rate of the encoder.
        head_lr: peak learning rate of the new classification head (``None`` -> ``lr``);
            a larger head lr helps a freshly initialised head on tiny data.
        batch_size: examples per optimisation step.
        max_length: token budget per prompt (text truncated to fit); must not exceed the
            model's position limit (512 for BERT/RoBERTa).
        seed: seeds ``torch.manual_seed``, the shuffling generator and ``random``.
        weight_decay: AdamW decay, not applied to biases and LayerNorm weights.
        warmup_ratio: fraction of total steps of linear warmup, then linear decay to 0.
        tag_weight: loss weight of gold B/I tokens relative to O (class-weighted cross-entropy
            against the all-O collapse on rare spans).
        dev_fraction: share of the examples held out (seeded) as a dev split for early
            stopping and best-epoch selection; ``0`` trains on everything for ``epochs``.
            Skipped when it would leave fewer than ``min_dev`` dev examples.
        min_dev: smallest dev split worth selecting on.
        patience: stop after this many epochs without a better dev score (``None``: never
            stop early, but still restore the best epoch).
        max_steps: cap on optimisation steps (``None``: ``epochs`` full passes); the
            learning-rate schedule spans the capped length.
        label_balance: weight label examples by inverse class frequency in the training set, so
            the "yes" and the "no" examples weigh the same in total (weights normalised to mean 1
            over the label examples; span examples keep weight 1): a rare class is not drowned out
            (issue 10, the all-"No" collapse). Part of the checkpoint version like every field.
        long_examples: what training does with an example whose prompt exceeds ``max_length``:
            ``"windows"`` splits it into the overlapping windows inference reads
            (:meth:`NTEProxy.train`), ``"truncate"`` keeps its first ``max_length`` tokens only
            (every proxy and metamodel before windows existed; the metamodel's pre-training
            keeps it, see :data:`~falconer_assets.metamodel.pretrain.PRETRAIN_TRAIN`).
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    epochs: int = 10
    lr: float = 1e-4
    head_lr: float | None = 1e-3
    batch_size: int = 8
    max_length: int = 256
    seed: int = 0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    tag_weight: float = 3.0
    dev_fraction: float = 0.15
    min_dev: int = 8
    patience: int | None = 3
    max_steps: int | None = None
    label_balance: bool = True
    long_examples: Literal["windows", "truncate"] = "windows"


FINE_TUNE_RECIPE = TrainConfig()
"""The task fine-tuning recipe for an NTE-pretrained base (the metamodel, Cuckoo): epochs 10, lr 1e-4,
head lr 1e-3, batch 8, tag weight 3, 15% dev split, patience 3, class-balanced label loss. The ``ProxyResource`` defaults and
``bench quality``'s metamodel curve; evidence in docs/proxy.md."""

FRESH_HEAD_RECIPE = FINE_TUNE_RECIPE.model_copy(update={"lr": 3e-4, "head_lr": 3e-3, "tag_weight": 5.0})
"""The recipe for a plain encoder with a freshly initialised head (MiniLM, MPNet): a higher
head lr and tag weight, or it predicts all O / all No (issue 2 measurements, MODELS.md)."""
