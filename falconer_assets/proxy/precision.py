"""Inference precision of the NTE proxy: the same fp32 weights, run as fp32, bf16 or dynamic int8.

Training and saved checkpoints are always float32 (:meth:`~falconer_assets.proxy.model.NTEProxy.load`);
a precision only changes the copy of the model that the proxy's ``get_span`` / ``get_label`` run
(:func:`inference_model`). The choice is measured by ``python -m falconer_assets.bench inference``
(:mod:`falconer_assets.bench.inference`, ``docs/bench/inference.md``): speed on the bundled Debian corpus,
F1 against the annotator on each task's held-out annotations, and agreement with fp32.

* ``"fp32"``: the model as trained (the reference).
* ``"bf16"``: a bfloat16 copy (``model.to(torch.bfloat16)``); logits are cast back to float32 before
  the softmax. On CUDA it uses the tensor cores; on a CPU with native bfloat16 (AVX512-BF16 or AMX,
  e.g. Xeon Sapphire Rapids and later) oneDNN's bf16 kernels. On a CPU without them PyTorch emulates
  bfloat16 and it is slower than fp32, so ``"auto"`` never picks it there.
* ``"int8"``: PyTorch dynamic quantization of every ``nn.Linear`` (int8 weights, activations quantized
  per batch; ``torch.ao.quantization.quantize_dynamic``), CPU only.
* ``"auto"``: :func:`resolve_precision` picks one for the device.
"""

from __future__ import annotations

import copy
import warnings

import torch

PRECISIONS = ("fp32", "bf16", "int8")
"""The concrete inference precisions; ``"auto"`` resolves to one of them (:func:`resolve_precision`)."""

AUTO = "auto"


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bfloat16 instructions (AVX512-BF16 or AMX tiles), so bf16 matmuls are native.

    Reads PyTorch's own CPU feature probe (``torch.cpu._is_avx512_bf16_supported`` and
    ``torch.cpu._is_amx_tile_supported``); False when this PyTorch build has no such probe.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    for probe in probes:
        try:
            if probe is not None and probe():
                return True
        except (RuntimeError, AttributeError):  # a build without the probe's backing function
            continue
    return False


def resolve_precision(precision: str, device: str) -> str:
    """The concrete precision (one of :data:`PRECISIONS`) that ``precision`` means on ``device``.

    ``"auto"``: ``"bf16"`` on CUDA when ``torch.cuda.is_bf16_supported()`` and on a CPU with native
    bfloat16 (:func:`cpu_has_native_bf16`), else ``"fp32"``. Bench ``inference`` (``docs/bench/inference.md``,
    2-core Xeon with AMX): bf16 ran 2.0-2.15x the fp32 docs/s on the three Debian tasks, its held-out F1
    within 0.0004 of fp32's on every sub-task; dynamic int8 ran 1.3-1.45x but lost up to 0.12 span F1.
    bf16 on CUDA was not measured (no GPU there). Other devices (``mps``...) get ``"fp32"``.
    A concrete value is returned as given after checking that the device can run it.

    Args:
        precision: ``"fp32"``, ``"bf16"``, ``"int8"`` or ``"auto"`` (case-insensitive).
        device: a resolved torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).

    Raises:
        ValueError: an unknown precision, or ``"int8"`` on a device other than the CPU (PyTorch's
            dynamic quantization has CPU kernels only).
    """
    p = (precision or "").strip().lower()
    kind = torch.device(device).type
    if p == AUTO:
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if kind == "cpu":
            return "bf16" if cpu_has_native_bf16() else "fp32"
        return "fp32"
    if p not in PRECISIONS:
        raise ValueError(f"unknown inference precision {precision!r}: use one of {', '.join(PRECISIONS + (AUTO,))}")
    if p == "int8" and kind != "cpu":
        raise ValueError(f"int8 inference (PyTorch dynamic quantization) runs on the CPU only, not {device!r}")
    return p


def inference_model(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model to run inference with at ``precision``; ``model`` itself is never modified.

    ``"fp32"`` returns ``model``; ``"bf16"`` a bfloat16 deep copy on the model's device; ``"int8"`` a copy
    with every ``nn.Linear`` dynamically quantized to int8 (weights quantized once, per tensor;
    activations per batch), on the CPU. The copy is in eval mode; its outputs (``.logits``, shape
    ``[batch, seq, labels]``) keep the input layout, in the copy's dtype (bf16 for ``"bf16"``).

    Args:
        model: a float32 Hugging Face token-classification model.
        precision: a concrete precision (:data:`PRECISIONS`; resolve ``"auto"`` first).

    Raises:
        ValueError: an unknown precision.
    """
    if precision == "fp32":
        return model
    if precision == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16).eval()
    if precision == "int8":
        with warnings.catch_warnings():  # torch.ao's quantized tensors are deprecated upstream (still shipped)
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(model).to("cpu").eval(), {torch.nn.Linear}, dtype=torch.qint8)
    raise ValueError(f"unknown inference precision {precision!r}: use one of {', '.join(PRECISIONS)}")
