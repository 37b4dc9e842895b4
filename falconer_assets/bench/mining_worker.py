"""One measurement of ``bench mining`` in a process of its own: a task's plan over the first N documents.

``python -m falconer_assets.bench.mining_worker '<json spec>'`` (run by :mod:`falconer_assets.bench.mining`,
one fresh process per (task, size), so ``ru_maxrss`` is that size's peak). The spec holds ``task``,
``size``, ``corpus_dir``, ``plan_source``, ``proxy_path``, ``batch_size`` (documents per plan batch, the
``mined`` asset's ``MiningConfig.batch_size``), ``inference_batch_size`` (texts per forward pass, the
``proxy`` resource's) and ``threads``. It mines exactly as the ``mined`` asset does
(:func:`falconer_assets.mining.mine_documents` with the proxy's ``get_label``/``get_span``), and counts
what the model is fed with forward hooks on the model (the proxy's code is not touched).

Stdout carries only protocol lines: ``@progress {"done", "total", "elapsed_s"}`` after each plan batch and
one final ``@result {...}`` (:func:`measure`); library messages go to stderr, which the parent sends to a
log file.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
from pathlib import Path

PROGRESS, RESULT = "@progress ", "@result "


def max_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS


def corpus_files(corpus_dir: str | Path) -> list[Path]:
    """The ``*.jsonl`` files of a corpus folder in name order (the order :func:`first_documents` reads).

    Raises:
        FileNotFoundError: the folder does not exist or holds no ``.jsonl`` file.
    """
    files = sorted(Path(corpus_dir).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no .jsonl file in {corpus_dir}")
    return files


def first_documents(corpus_dir: str | Path, n: int) -> tuple[list, int]:
    """The first ``n`` valid documents of a corpus folder (files in name order, lines in file order).

    Lines that :func:`falconer_assets.inputs.corpus.read_corpus` rejects (bad JSON, text over
    ``MAX_TEXT_CHARS``...) are skipped and counted, as the ``mined`` asset does.

    Returns:
        ``(documents, rejected lines read)``; fewer than ``n`` documents when the corpus is smaller.
    """
    from falconer_assets.inputs.corpus import read_corpus

    docs, rejected = [], 0
    for path in corpus_files(corpus_dir):
        got, rejects = read_corpus(path)
        rejected += len(rejects)
        docs.extend(got[: n - len(docs)])
        if len(docs) >= n:
            break
    return docs, rejected


class _ForwardMeter:
    """Forward hooks on a token-classification model: tokens fed, forward time and FLOPs per call."""

    def __init__(self, model, dims) -> None:
        from falconer_assets.bench.roofline import batch_flops

        self._flops, self.dims = batch_flops, dims
        self.calls = self.sequences = self.real_tokens = self.padded_tokens = 0
        self.forward_s = self.flops_useful = self.flops_executed = 0.0
        self.max_len = 0
        self._t0 = 0.0
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         model.register_forward_hook(self._post)]

    def _pre(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is not None:
            rows, width = int(ids.shape[0]), int(ids.shape[1])
            lengths = [int(x) for x in mask.sum(dim=1).tolist()] if mask is not None else [width] * rows
            useful, executed = self._flops(self.dims, lengths, width)
            self.calls += 1
            self.sequences += rows
            self.real_tokens += sum(lengths)
            self.padded_tokens += rows * width
            self.flops_useful += useful
            self.flops_executed += executed
            self.max_len = max(self.max_len, width)
        self._t0 = time.perf_counter()

    def _post(self, _module, _args, _output):
        self.forward_s += time.perf_counter() - self._t0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def measure(spec: dict, emit=print) -> dict:
    """Load the docs, the plan and the proxy; mine; return the measurement (see the module docstring).

    Returns:
        ``{"task", "size", "docs", "rejected_lines", "wall_s" (mining only), "load_s", "docs_per_s",
        "real_tokens", "padded_tokens", "tokens_per_s" (real tokens / wall), "forward_s", "forward_calls",
        "sequences", "max_seq_len", "flops_useful", "flops_executed", "gflops" (useful FLOPs / wall),
        "forward_gflops" (useful FLOPs / forward time), "rows", "docs_retrieved", "docs_rejected",
        "rss_before_mib" (peak after loading), "peak_rss_mib", "loadavg_start", "loadavg_end", "threads",
        "dims", "max_length"}``.

    Raises:
        falconer_assets.plan.sandbox.PlanValidationError: the plan is invalid.
        FileNotFoundError: the corpus folder or the proxy is missing.
    """
    import torch

    from falconer_assets.bench.roofline import EncoderDims
    from falconer_assets.mining import mine_documents
    from falconer_assets.plan.sandbox import validate_plan
    from falconer_assets.proxy.model import NTEProxy

    torch.set_num_threads(int(spec["threads"]))
    t0 = time.perf_counter()
    docs, rejected = first_documents(spec["corpus_dir"], int(spec["size"]))
    plan = validate_plan(spec["plan_source"])
    proxy = NTEProxy.load(str(spec["proxy_path"]), device="cpu")
    load_s = time.perf_counter() - t0
    dims = EncoderDims.from_config(proxy.model.config)
    meter = _ForwardMeter(proxy.model, dims)
    bs = int(spec["inference_batch_size"])
    rss_before = max_rss_mib()
    load_start = os.getloadavg()[0]
    started = time.perf_counter()

    def progress(message: str) -> None:
        m = re.match(r"mined (\d+)/(\d+) docs", message)
        if m:
            emit(PROGRESS + json.dumps({"done": int(m.group(1)), "total": int(m.group(2)),
                                        "elapsed_s": time.perf_counter() - started}))

    rows, _rejects, stats = mine_documents(
        plan, docs, lambda texts, q: proxy.get_label(texts, q, batch_size=bs),
        lambda texts, q: proxy.get_span(texts, q, batch_size=bs), batch_size=int(spec["batch_size"]), log=progress)
    meter.remove()
    wall = stats.seconds
    return {
        "task": spec["task"], "size": int(spec["size"]), "docs": len(docs), "rejected_lines": rejected,
        "wall_s": wall, "load_s": load_s, "docs_per_s": len(docs) / wall if wall > 0 else 0.0,
        "real_tokens": meter.real_tokens, "padded_tokens": meter.padded_tokens,
        "tokens_per_s": meter.real_tokens / wall if wall > 0 else 0.0,
        "forward_s": meter.forward_s, "forward_calls": meter.calls, "sequences": meter.sequences,
        "max_seq_len": meter.max_len, "flops_useful": meter.flops_useful, "flops_executed": meter.flops_executed,
        "gflops": meter.flops_useful / wall / 1e9 if wall > 0 else 0.0,
        "forward_gflops": meter.flops_useful / meter.forward_s / 1e9 if meter.forward_s > 0 else 0.0,
        "rows": len(rows), "docs_retrieved": stats.docs_retrieved, "docs_rejected": stats.docs_rejected,
        "rss_before_mib": rss_before, "peak_rss_mib": max_rss_mib(),
        "loadavg_start": load_start, "loadavg_end": os.getloadavg()[0], "threads": torch.get_num_threads(),
        "dims": dims.as_dict(), "max_length": proxy.max_length,
    }


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``argv[0]`` is the JSON spec; prints ``@result`` and returns 0."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    result = measure(spec, emit=lambda line: print(line, flush=True))
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
