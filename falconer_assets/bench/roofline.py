"""The proxy's arithmetic and this machine's matrix-multiply peak, for ``bench mining``'s roofline share.

**FLOPs of a BERT-style encoder** (the proxy: MiniLM-L6 and any ``*ForTokenClassification`` with
the usual ``num_hidden_layers`` / ``hidden_size`` / ``intermediate_size`` config). With ``h`` the
hidden size, ``i`` the intermediate (feed-forward) size, ``n`` layers, ``c`` output labels and a
multiply-add counted as 2 FLOPs, one sequence of ``L`` tokens costs, per layer and token:

* Q, K, V and attention-output projections: ``4 x 2*h*h = 8*h^2``;
* feed-forward up and down projections: ``2 x 2*h*i = 4*h*i``;
* attention scores ``Q K^T`` and their weighted sum ``A V``: ``2 x 2*L*h = 4*L*h``
  (every token against the ``L`` tokens of its sequence);

plus the token-classification head, ``2*h*c`` per token. So

    FLOPs(L) = L * (n * (8*h^2 + 4*h*i) + 2*h*c) + n * 4*L^2*h
    FLOPs per token at length L = n * (8*h^2 + 4*h*i + 4*L*h) + 2*h*c

(Kaplan et al. 2020, "Scaling laws", Table 1, forward pass; softmax, layer norms, GELU, biases
and the embedding lookup are O(h) per token and left out, under 1% here). For MiniLM-L6
(``n=6, h=384, i=1536, c=3``) at ``L=256``: 23.6 MFLOP per token.

**Peak**: :func:`measure_matmul` times ``torch.matmul`` in float32 at the encoder's own shapes
(``[M, h] @ [h, h]``, ``[M, h] @ [h, i]``, ``[M, i] @ [i, h]``) and one large square, and int8 the
same shapes with ``torch._int_mm`` (int8 x int8 -> int32, oneDNN/VNNI on x86) and with
``torch.ao.nn.quantized.dynamic.Linear`` (the kernel ``torch.ao.quantization.quantize_dynamic``
puts in a model; float in and out, so it pays for quantising its input). The best rate of each
precision is the machine's measured peak: the ceiling of a compute-bound roofline for this model.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderDims:
    """The sizes of an encoder that set its FLOPs.

    Attributes:
        layers: transformer layers (``num_hidden_layers``).
        hidden: hidden size ``h`` (``hidden_size``).
        intermediate: feed-forward size ``i`` (``intermediate_size``).
        num_labels: outputs of the token-classification head (3: O, B, I).
    """

    layers: int
    hidden: int
    intermediate: int
    num_labels: int = 3

    @classmethod
    def from_config(cls, config) -> "EncoderDims":
        """Read the dims from a Hugging Face config (BERT, RoBERTa, MPNet, DeBERTa names).

        Raises:
            ValueError: the config lacks ``num_hidden_layers``, ``hidden_size`` or ``intermediate_size``.
        """
        try:
            return cls(int(config.num_hidden_layers), int(config.hidden_size), int(config.intermediate_size),
                       int(getattr(config, "num_labels", 3) or 3))
        except AttributeError as exc:
            raise ValueError(f"not a BERT-style encoder config ({type(config).__name__}): {exc}") from exc

    def as_dict(self) -> dict:
        """JSON-safe ``{"layers", "hidden", "intermediate", "num_labels"}``."""
        return {"layers": self.layers, "hidden": self.hidden, "intermediate": self.intermediate,
                "num_labels": self.num_labels}


def sequence_flops(dims: EncoderDims, seq_len: int) -> float:
    """Forward FLOPs of one sequence of ``seq_len`` tokens (module docstring's formula).

    ``seq_len * (n*(8h^2 + 4hi) + 2hc) + n*4*seq_len^2*h``; 0 for ``seq_len == 0``.

    Raises:
        ValueError: ``seq_len < 0``.
    """
    if seq_len < 0:
        raise ValueError(f"seq_len must be >= 0, got {seq_len}")
    h, i, n = dims.hidden, dims.intermediate, dims.layers
    per_token = n * (8 * h * h + 4 * h * i) + 2 * h * dims.num_labels
    return float(seq_len * per_token + n * 4 * seq_len * seq_len * h)


def flops_per_token(dims: EncoderDims, seq_len: int) -> float:
    """Forward FLOPs per token of a sequence of ``seq_len`` tokens: ``n*(8h^2 + 4hi + 4*L*h) + 2hc``.

    Raises:
        ValueError: ``seq_len < 1``.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    return sequence_flops(dims, seq_len) / seq_len


def batch_flops(dims: EncoderDims, lengths: list[int], padded_len: int) -> tuple[float, float]:
    """``(useful, executed)`` FLOPs of one padded forward batch.

    ``useful`` counts each sequence at its own length (``lengths``, the attention-mask sums),
    ``executed`` every row at the padded length ``padded_len`` (what the kernels compute,
    padding included).
    """
    useful = sum(sequence_flops(dims, int(n)) for n in lengths)
    return useful, len(lengths) * sequence_flops(dims, int(padded_len))


# -------------------------------------------------------------------------------------- matmul peak


def _rate(fn: Callable[[], object], flops: float, min_seconds: float, repeats: int) -> float:
    """Best FLOP/s over ``repeats`` timed windows of at least ``min_seconds`` each (after one warm-up call)."""
    fn()
    best = 0.0
    for _ in range(repeats):
        calls, t0 = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        best = max(best, flops * calls / elapsed)
    return best


def matmul_shapes(dims: EncoderDims, rows: int = 4096, square: int = 2048) -> list[tuple[str, int, int, int]]:
    """``[(label, M, K, N), ...]``: the encoder's three GEMM shapes at ``rows`` token rows, and a large square."""
    h, i = dims.hidden, dims.intermediate
    return [(f"QKV/out proj [{rows}x{h}]@[{h}x{h}]", rows, h, h),
            (f"FFN up [{rows}x{h}]@[{h}x{i}]", rows, h, i),
            (f"FFN down [{rows}x{i}]@[{i}x{h}]", rows, i, h),
            (f"square [{square}]^3", square, square, square)]


def measure_matmul(dims: EncoderDims, threads: int | None = None, min_seconds: float = 0.3, repeats: int = 3,
                   log: Callable[[str], None] = lambda _m: None) -> dict:
    """Measure float32 and int8 matrix-multiply rates on this CPU at the encoder's shapes.

    Args:
        dims: the encoder whose GEMM shapes are timed (:func:`matmul_shapes`).
        threads: ``torch.set_num_threads`` for the measurement (restored after); ``None`` keeps it.
        min_seconds, repeats: each rate is the best of ``repeats`` windows of ``min_seconds``.
        log: progress lines.

    Returns:
        ``{"threads", "fp32": [{"shape", "m", "k", "n", "gflops"}], "int8": [{"shape", "method",
        "m", "k", "n", "gops"}], "fp32_peak_gflops", "int8_peak_gops" (``None`` when no int8 kernel
        ran), "int8_peak_method", "torch"}``; rates in 10^9 operations per second (a multiply-add = 2).
    """
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    out: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "fp32": [], "int8": []}
    try:
        gen = torch.Generator().manual_seed(0)
        for label, m, k, n in matmul_shapes(dims):
            a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
            rate = _rate(lambda: torch.matmul(a, b), 2.0 * m * k * n, min_seconds, repeats)
            out["fp32"].append({"shape": label, "m": m, "k": k, "n": n, "gflops": rate / 1e9})
            log(f"  matmul fp32 {label}: {rate / 1e9:.1f} GFLOP/s")
            ai = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=gen)
            bi = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=gen)
            for method, fn in (("torch._int_mm", lambda: torch._int_mm(ai, bi)),
                               ("quantized dynamic Linear", _dynamic_linear(k, n, a))):
                if fn is None:
                    continue
                try:
                    rate = _rate(fn, 2.0 * m * k * n, min_seconds, repeats)
                except (RuntimeError, AttributeError, NotImplementedError) as exc:
                    log(f"  matmul int8 {method} {label}: not available ({str(exc).splitlines()[0][:80]})")
                    continue
                out["int8"].append({"shape": label, "method": method, "m": m, "k": k, "n": n, "gops": rate / 1e9})
                log(f"  matmul int8 {method} {label}: {rate / 1e9:.1f} GOP/s")
    finally:
        torch.set_num_threads(old)
    out["fp32_peak_gflops"] = max(r["gflops"] for r in out["fp32"])
    best = max(out["int8"], key=lambda r: r["gops"], default=None)
    out["int8_peak_gops"] = best["gops"] if best else None
    out["int8_peak_method"] = best["method"] if best else None
    return out


def _dynamic_linear(k: int, n: int, x) -> Callable[[], object] | None:
    """``y = Linear_int8(x)`` as ``quantize_dynamic`` builds it (weights int8, activations quantised per call),
    or ``None`` when this torch has no quantized engine."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lin = torch.ao.nn.quantized.dynamic.Linear(k, n, bias_=False)
    except (RuntimeError, AttributeError, AssertionError):
        return None
    return lambda: lin(x)
