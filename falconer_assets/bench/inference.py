"""Proxy inference precision benchmark: docs/s and F1 of fp32, bf16, dynamic int8 and ONNX Runtime.

``python -m falconer_assets.bench inference [--quick] [--docs N] [--tasks a,b] [--candidates fp32,bf16]``.

For every task of ``<data>/tasks/*.yaml`` with a fine-tuned checkpoint ``<data>/checkpoints/<task>`` it runs
every sub-task of the task's plan (``get_label`` / ``get_span`` of each ``(kind, instruction)`` in the
warehouse table ``plans``, column ``calls``; without a stored plan, the held-out annotations' distinct
sub-tasks) over the first ``docs`` documents of the task's corpus, once per candidate inference path:

* ``fp32``, ``bf16``, ``int8``: :meth:`NTEProxy.load(..., precision=) <falconer_assets.proxy.model.NTEProxy.load>`
  (:mod:`falconer_assets.proxy.precision`), the paths the ``mined`` asset can use;
* ``onnx_fp32``, ``onnx_int8``: reference points, the checkpoint exported with ``torch.onnx.export``
  (dynamo exporter) into ``<work>/<task>/`` and run by ONNX Runtime's CPU provider, fp32 or with
  ``onnxruntime.quantization.quantize_dynamic`` int8 weights (the ``onnx`` extra: ``pip install -e '.[onnx]'``;
  skipped, with the reason recorded, when it is not installed or the device is not the CPU).

Speed is measured in ``repeats`` rounds; each round runs every candidate once, in alternating order
(round 0 in list order, round 1 reversed, ...), so that other load on the machine hits all candidates
alike; a candidate's docs/s is the median over rounds and its speed-up the median over rounds of
``fp32 seconds / its seconds`` in the same round. Every candidate also answers each sub-task on the
task's held-out annotations (warehouse ``annotations``, ``split='heldout'``, usable rows, documents of
the corpus), scored against the annotator as the ``eval`` asset does
(:func:`~falconer_assets.metrics.score_label_subtask` / :func:`~falconer_assets.metrics.score_span_subtask`
with each row's stratum ``weight``): label F1, or exact-span F1 (word F1 kept too); its F1 change against
fp32 on the same documents; and its agreement with fp32 on the ``docs`` corpus documents (share of
identical labels, or of identical span sets by character offsets). The fp32 pass also records the
padding share of its forward passes (padded tokens that are not prompt tokens).

The default precision (:func:`choose_default`) is the fastest proxy path (``fp32``/``bf16``/``int8``) whose
F1 loss against fp32 is at most ``max_f1_loss`` on every sub-task of every task; fp32 when none is faster.

Results: ``<out>/inference.json``, ``inference.md`` (tables) and ``inference.png``. Default ``out``:
``docs/bench``; ``--quick``: ``data/bench_quick`` (one task, 48 documents, fp32/bf16/int8, under a minute of
compute on 2 cores). The warehouse ``<data>/falconer.duckdb`` is opened read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from falconer_assets.bench.mining import INFERENCE_BATCH_SIZE, machine

Log = Callable[[str], None]

PROXY_PATHS = ("fp32", "bf16", "int8")
"""Candidates that are :class:`~falconer_assets.proxy.model.NTEProxy` precisions (the default is chosen among them)."""
ONNX_PATHS = ("onnx_fp32", "onnx_int8")
"""Reference candidates run by ONNX Runtime (not selectable as the proxy's precision)."""


@dataclass(frozen=True)
class InferenceBenchSettings:
    """What one benchmark run measures.

    Attributes:
        docs: corpus documents (the first ``docs`` of the task's corpus) timed per candidate and round.
        repeats: rounds of timing (each round runs every candidate once, order alternating).
        candidates: paths to compare (:data:`PROXY_PATHS`, :data:`ONNX_PATHS`); ``fp32`` is always run.
        tasks: task names; ``None`` = every task with a checkpoint.
        batch_size: windows per forward pass (the ``proxy`` resource's ``inference_batch_size``).
        threads: torch / ONNX Runtime threads; ``None`` = all cores.
        device: ``"cpu"`` or ``"cuda"`` (int8 and ONNX need the CPU and are skipped elsewhere).
        max_f1_loss: the largest F1 drop against fp32, on any sub-task, a default may cost.
    """

    docs: int = 300
    repeats: int = 3
    candidates: tuple[str, ...] = PROXY_PATHS + ONNX_PATHS
    tasks: tuple[str, ...] | None = None
    batch_size: int = INFERENCE_BATCH_SIZE
    threads: int | None = None
    device: str = "cpu"
    max_f1_loss: float = 0.01


FULL = InferenceBenchSettings()
QUICK = InferenceBenchSettings(docs=48, repeats=2, candidates=PROXY_PATHS, tasks=("debian_game_genres",))
"""``--quick``: one task, 48 documents, the three proxy precisions (well under 2 minutes on 2 cores)."""


# ------------------------------------------------------------------------------------------ inputs


def task_inputs(task_name: str, data_dir: Path) -> dict:
    """Everything the benchmark needs of one task, read from the data folder.

    Returns:
        ``{"task", "checkpoint" (path), "corpus" (a :class:`~falconer_assets.inputs.corpus.Corpus`),
        "calls" ([(kind, instruction)], the plan's sub-tasks), "calls_from" ("plan" or "heldout"),
        "heldout" ({(kind, instruction): [AnnotationRow]}, usable rows on corpus documents)}``.

    Raises:
        FileNotFoundError: no task file, no checkpoint, or no corpus file.
        ValueError: neither a stored plan nor held-out annotations name a sub-task.
    """
    from falconer_assets.inputs.corpus import read_corpus_folder
    from falconer_assets.inputs.tasks import load_task
    from falconer_assets.proxy.model import PROXY_META_FILE

    task_file = data_dir / "tasks" / f"{task_name}.yaml"
    if not task_file.is_file():
        raise FileNotFoundError(f"unknown task {task_name!r}: no {task_file}")
    task = load_task(task_file)
    ckpt = data_dir / "checkpoints" / task_name
    if not (ckpt / PROXY_META_FILE).is_file():
        raise FileNotFoundError(f"{task_name}: no proxy checkpoint in {ckpt} (materialize proxy_checkpoint first)")
    corpus = read_corpus_folder(data_dir / "corpora", task.corpus)
    plan_calls, heldout = _warehouse_rows(data_dir / "falconer.duckdb", task_name)
    by_id = corpus.by_id
    groups: dict[tuple[str, str], list] = {}
    for r in heldout:
        if r.usable and r.doc_id in by_id:
            groups.setdefault(r.sub_task, []).append(r)
    calls, calls_from = (list(plan_calls), "plan") if plan_calls else (sorted(groups), "heldout")
    if not calls:
        raise ValueError(f"{task_name}: no stored plan and no held-out annotations name a sub-task")
    return {"task": task, "checkpoint": ckpt, "corpus": corpus, "calls": calls, "calls_from": calls_from,
            "heldout": groups}


def _warehouse_rows(db: Path, task: str, attempts: int = 10) -> tuple[tuple, list]:
    """``(plan calls, held-out annotation rows)`` of ``task`` from the warehouse opened read-only (empty when absent).

    A warehouse locked by a writer (a Dagster run) is retried ``attempts`` times, 3 s apart.

    Raises:
        RuntimeError: still locked (or unreadable) after the retries.
    """
    if not db.is_file():
        return (), []
    import duckdb

    from falconer_assets.warehouse.store import read_annotations, read_plan

    for attempt in range(attempts):
        try:
            conn = duckdb.connect(str(db), read_only=True)
        except duckdb.Error as exc:
            if attempt == attempts - 1:
                raise RuntimeError(f"cannot open {db} read-only: {str(exc).splitlines()[0]}") from exc
            time.sleep(3)
            continue
        try:
            record = read_plan(conn, task)
            return (record.calls if record is not None else ()), read_annotations(conn, task, "heldout")
        finally:
            conn.close()
    return (), []


def tasks_with_checkpoints(data_dir: Path) -> list[str]:
    """Names of the tasks in ``<data>/tasks/*.yaml`` that have a checkpoint in ``<data>/checkpoints``, sorted."""
    from falconer_assets.proxy.model import PROXY_META_FILE

    return sorted(p.stem for p in (data_dir / "tasks").glob("*.yaml")
                  if (data_dir / "checkpoints" / p.stem / PROXY_META_FILE).is_file())


# ------------------------------------------------------------------------------------- candidates


class OnnxTokenClassifier:
    """An ONNX Runtime session that quacks like a Hugging Face token-classification model for :class:`NTEProxy`.

    Called with the tokenizer's batch (``input_ids``, ``attention_mask``, optional ``token_type_ids``,
    int64 tensors ``[batch, seq]``), it returns an object whose ``logits`` is a float32 CPU tensor
    ``[batch, seq, labels]``. ``config`` is the source model's config; ``to``/``eval`` are no-ops.
    """

    def __init__(self, path: Path, config, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared cores: no busy-waiting
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.config = config
        self.training = False

    def to(self, _device):
        """No-op (the session runs on the CPU)."""
        return self

    def eval(self):
        """No-op (an exported graph has no training mode)."""
        return self

    def __call__(self, **batch):
        import torch
        from types import SimpleNamespace

        feed = {k: (batch[k] if k in batch else torch.zeros_like(batch["input_ids"])).numpy() for k in self.inputs}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(None, feed)[0]))


def export_onnx(model, folder: Path, int8: bool) -> Path:
    """Export ``model`` (a float32 token-classification model) to ``folder/model.onnx`` (and ``model_int8.onnx``).

    Dynamic batch and sequence axes; inputs ``input_ids``, ``attention_mask``, ``token_type_ids``; output
    ``logits``. The dynamo exporter is used (the TorchScript one gave logits off by up to 1.4 with
    transformers 5). Returns the path of the requested graph.

    Raises:
        ImportError: ``onnx``, ``onnxscript`` or ``onnxruntime`` is missing.
    """
    import contextlib
    import io
    import warnings

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "model.onnx"

    class _Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    if not fp32.is_file():
        ids = torch.full((2, 16), 1000, dtype=torch.long)
        mask = torch.ones(2, 16, dtype=torch.long)
        mask[1, 10:] = 0
        names = ["input_ids", "attention_mask", "token_type_ids"]
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(_Logits(model.eval()), (ids, mask, torch.zeros_like(ids)), str(fp32), input_names=names,
                              output_names=["logits"], opset_version=17, dynamo=True,
                              dynamic_axes={k: {0: "batch", 1: "seq"} for k in names + ["logits"]})
    if not int8:
        return fp32
    q8 = folder / "model_int8.onnx"
    if not q8.is_file():
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice
        quantize_dynamic(str(fp32), str(q8), weight_type=QuantType.QInt8)
    return q8


def build_candidate(name: str, checkpoint: Path, device: str, threads: int, work: Path):
    """An :class:`~falconer_assets.proxy.model.NTEProxy` running inference by path ``name``.

    Raises:
        ValueError: an unknown candidate, or one ``device`` cannot run.
        ImportError: an ONNX candidate without ONNX Runtime installed.
    """
    from falconer_assets.proxy.model import NTEProxy

    if name in PROXY_PATHS:
        return NTEProxy.load(str(checkpoint), device=device, precision=name)
    if name in ONNX_PATHS:
        if device != "cpu":
            raise ValueError(f"{name} runs on the CPU only")
        import onnxruntime  # noqa: F401  (fail before exporting)
        import onnxscript  # noqa: F401

        base = NTEProxy.load(str(checkpoint), device="cpu")
        weights = sorted(checkpoint.glob("*.safetensors")) or sorted(checkpoint.glob("*.bin"))
        # a re-trained checkpoint gets a new folder, so it is exported again
        stamp = "-".join(f"{p.stat().st_size}.{p.stat().st_mtime_ns}" for p in weights)
        folder = work / f"{checkpoint.name}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}"
        graph = export_onnx(base.model, folder, int8=name == "onnx_int8")
        return NTEProxy(OnnxTokenClassifier(graph, base.model.config, threads), base.tokenizer, device="cpu",
                        max_length=base.max_length)
    raise ValueError(f"unknown candidate {name!r}: use {', '.join(PROXY_PATHS + ONNX_PATHS)}")


# -------------------------------------------------------------------------------------- measuring


def run_subtasks(proxy, calls: list[tuple[str, str]], texts: list[str], batch_size: int) -> list[list]:
    """Every sub-task of ``calls`` on ``texts``: one list per call, a bool (label) or a span list (span) per text."""
    return [proxy.get_label(texts, q, batch_size) if kind == "label" else proxy.get_span(texts, q, batch_size)
            for kind, q in calls]


def agreement(kind: str, answers: list, reference: list) -> float:
    """Share of texts whose answer equals the reference's: the same label, or the same set of ``(start, end)``."""
    if not answers:
        return 1.0
    if kind == "label":
        same = [bool(a) == bool(r) for a, r in zip(answers, reference)]
    else:
        same = [{(s.start, s.end) for s in a} == {(s.start, s.end) for s in r} for a, r in zip(answers, reference)]
    return sum(same) / len(same)


def heldout_scores(proxy, heldout: dict, by_id: dict, batch_size: int) -> dict[str, dict]:
    """Each held-out sub-task scored against the annotator as the ``eval`` asset does (stratum weights).

    Returns:
        ``{"<kind>|<instruction>": {"kind", "instruction", "n" (held-out docs), "f1" (label F1 or exact-span F1),
        "f1_low", "f1_high" (its 95% document-bootstrap interval), "word_f1" (span only), "precision", "recall"}}``.
    """
    from falconer_assets.metrics import score_label_subtask, score_span_subtask

    out = {}
    for (kind, q), items in heldout.items():
        texts = [by_id[r.doc_id].text for r in items]
        weights = [r.weight for r in items] if any(r.weight != 1.0 for r in items) else None
        if kind == "label":
            s = score_label_subtask(q, [bool(r.label) for r in items], proxy.get_label(texts, q, batch_size), weights)
            m = {"f1": s.metrics["label_f1"], "f1_low": s.metrics["label_f1_low"],
                 "f1_high": s.metrics["label_f1_high"], "precision": s.metrics["label_precision"],
                 "recall": s.metrics["label_recall"]}
        else:
            s = score_span_subtask(q, texts, [list(r.spans) for r in items], proxy.get_span(texts, q, batch_size),
                                   weights)
            m = {"f1": s.metrics["span_f1"], "f1_low": s.metrics["span_f1_low"], "f1_high": s.metrics["span_f1_high"],
                 "word_f1": s.metrics["word_f1"], "precision": s.metrics["span_precision"],
                 "recall": s.metrics["span_recall"]}
        out[f"{kind}|{q}"] = {"kind": kind, "instruction": q, "n": s.n, **m}
    return out


class _PaddingMeter:
    """Forward pre-hook counting prompt tokens (attention mask) and padded tokens (batch x width)."""

    def __init__(self, model) -> None:
        self.real = self.padded = 0
        self.handle = model.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, _module, _args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None:
            self.real += int(mask.sum())
            self.padded += int(mask.numel())

    def share(self) -> float:
        """Padded tokens that are not prompt tokens, as a share of all tokens run (0.0 before any forward)."""
        return 1.0 - self.real / self.padded if self.padded else 0.0


def measure_task(task_name: str, settings: InferenceBenchSettings, data_dir: Path, work: Path, log: Log) -> dict:
    """Time, score and compare every candidate on one task (see the module docstring).

    Returns:
        ``{"checkpoint", "calls", "calls_from", "docs", "padding_share", "real_tokens", "padded_tokens",
        "heldout_n", "skipped": {candidate: reason}, "candidates": {name: {"seconds" [per round],
        "docs_per_s" [per round], "median_docs_per_s", "speedup" [per round vs fp32], "median_speedup",
        "prepare_s", "heldout": {...}, "agreement": {"<kind>|<instruction>": share}, "f1_delta": {...}}}}``.

    Raises:
        FileNotFoundError, ValueError: as :func:`task_inputs`.
    """
    import gc

    import torch

    inputs = task_inputs(task_name, data_dir)
    calls = [tuple(c) for c in inputs["calls"]]
    texts = [d.text for d in inputs["corpus"].docs[: settings.docs]]
    by_id = inputs["corpus"].by_id
    threads = settings.threads or os.cpu_count() or 1
    names = ["fp32"] + [c for c in settings.candidates if c != "fp32"]
    log(f"{task_name}: {len(calls)} sub-task(s) from the {inputs['calls_from']}, {len(texts)} docs, "
        f"{sum(len(v) for v in inputs['heldout'].values())} held-out answers; candidates {', '.join(names)}")
    proxies, prepare, skipped = {}, {}, {}
    for name in names:
        t0 = time.perf_counter()
        try:
            proxy = build_candidate(name, inputs["checkpoint"], settings.device, threads, work)
            run_subtasks(proxy, calls, texts[:4], settings.batch_size)  # builds the precision copy, warms kernels
        except (ImportError, ValueError) as exc:
            if name == "fp32":
                raise
            skipped[name] = f"{type(exc).__name__}: {exc}"
            log(f"  {name}: skipped ({skipped[name]})")
            continue
        proxies[name], prepare[name] = proxy, time.perf_counter() - t0
        log(f"  {name}: ready in {prepare[name]:.1f} s")
    seconds: dict[str, list[float]] = {n: [] for n in proxies}
    answers: dict[str, list[list]] = {}
    meter = _PaddingMeter(proxies["fp32"].model)
    for rnd in range(settings.repeats):
        order = list(proxies) if rnd % 2 == 0 else list(proxies)[::-1]
        for name in order:
            t0 = time.perf_counter()
            got = run_subtasks(proxies[name], calls, texts, settings.batch_size)
            seconds[name].append(time.perf_counter() - t0)
            answers.setdefault(name, got)
            if name == "fp32":
                meter.handle.remove()  # one round is enough for the padding count
            log(f"  round {rnd + 1}/{settings.repeats} {name}: {len(texts) / seconds[name][-1]:.1f} docs/s "
                f"(load {os.getloadavg()[0]:.1f})")
    results: dict = {}
    ref_scores = None
    for name, proxy in proxies.items():
        scores = heldout_scores(proxy, inputs["heldout"], by_id, settings.batch_size)
        ref_scores = scores if name == "fp32" else ref_scores
        speedup = [f / s for f, s in zip(seconds["fp32"], seconds[name])]
        results[name] = {
            "seconds": seconds[name], "docs_per_s": [len(texts) / s for s in seconds[name]],
            "median_docs_per_s": len(texts) / statistics.median(seconds[name]),
            "speedup": speedup, "median_speedup": statistics.median(speedup), "prepare_s": prepare[name],
            "heldout": scores,
            "agreement": {f"{k}|{q}": agreement(k, a, r)
                          for (k, q), a, r in zip(calls, answers[name], answers["fp32"])},
        }
    for name, res in results.items():
        res["f1_delta"] = {k: res["heldout"][k]["f1"] - ref_scores[k]["f1"] for k in res["heldout"]}
    del proxies
    gc.collect()
    torch.set_num_threads(threads)
    return {"checkpoint": str(inputs["checkpoint"]), "calls": [list(c) for c in calls],
            "calls_from": inputs["calls_from"], "docs": len(texts), "padding_share": meter.share(),
            "real_tokens": meter.real, "padded_tokens": meter.padded,
            "heldout_n": {f"{k}|{q}": len(v) for (k, q), v in inputs["heldout"].items()},
            "skipped": skipped, "candidates": results}


def choose_default(tasks: dict, max_f1_loss: float) -> dict:
    """The default inference precision: the fastest proxy path whose F1 loss against fp32 is at most
    ``max_f1_loss`` on every held-out sub-task of every task (fp32 when none is faster).

    Speed is the geometric mean over tasks of the candidate's median speed-up against fp32.

    Returns:
        ``{"precision", "speedup" (geometric mean), "reason", "qualified": {name: bool},
        "worst_f1_delta": {name: (delta, "task: sub-task")}}`` (a lower delta is a loss).
    """
    import math

    qualified, speed, worst = {}, {}, {}
    names = sorted({n for t in tasks.values() for n in t["candidates"]})
    for name in names:
        deltas = [(d, f"{task}, {k.replace('|', ': ', 1)}") for task, t in tasks.items() if name in t["candidates"]
                  for k, d in t["candidates"][name]["f1_delta"].items()]
        ups = [t["candidates"][name]["median_speedup"] for t in tasks.values() if name in t["candidates"]]
        worst[name] = min(deltas) if deltas else (0.0, "")
        qualified[name] = all(-d <= max_f1_loss + 1e-9 for d, _ in deltas) and len(ups) == len(tasks)
        speed[name] = math.exp(sum(math.log(u) for u in ups) / len(ups)) if ups else 0.0
    pool = [n for n in names if n in PROXY_PATHS and qualified[n]]
    best = max(pool, key=lambda n: speed[n], default="fp32")
    if best != "fp32" and speed[best] <= 1.0:
        best = "fp32"
    if best == "fp32":
        reason = (f"no proxy path beat fp32 with an F1 loss <= {max_f1_loss} on every sub-task; "
                  + "; ".join(f"{n}: {speed[n]:.2f}x, worst F1 change {worst[n][0]:+.4f} ({worst[n][1]})"
                              for n in names if n in PROXY_PATHS and n != "fp32"))
    else:
        reason = (f"{best} is the fastest proxy path ({speed[best]:.2f}x fp32, geometric mean over tasks) whose F1 "
                  f"loss is <= {max_f1_loss} on every sub-task (worst change {worst[best][0]:+.4f}, {worst[best][1]})")
    return {"precision": best, "speedup": speed.get(best, 1.0), "reason": reason, "qualified": qualified,
            "worst_f1_delta": worst, "geomean_speedup": speed}


# -------------------------------------------------------------------------------------------- run


def run(settings: InferenceBenchSettings, out: Path, work: Path, data_dir: Path = Path("data"), *,
        quick: bool = False, report_only: bool = False, log: Log = print) -> dict:
    """Measure every task and candidate; write ``<out>/inference.json``, ``inference.md`` and ``inference.png``.

    With ``report_only`` nothing is measured: the report and the plot are rebuilt from ``inference.json``.

    Returns:
        The results dict written to ``inference.json``: ``{"settings", "machine", "auto" (what
        ``precision="auto"`` resolves to here), "tasks": {task: measure_task(...)}, "default": choose_default(...),
        "loadavg_start", "loadavg_end", "minutes", "measured_at"}``.

    Raises:
        FileNotFoundError: no task with a checkpoint, or a named task without one; with ``report_only``, no
            ``inference.json``.
    """
    if report_only:
        path = out / "inference.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: nothing to report")
        results = json.loads(path.read_text())
        results["default"] = choose_default(results["tasks"], results["settings"]["max_f1_loss"])
        path.write_text(json.dumps(results, indent=1, default=str))
        (out / "inference.md").write_text(markdown(results))
        plot(results, out / "inference.png")
        return results
    import torch

    from falconer_assets.proxy.precision import resolve_precision

    threads = settings.threads or os.cpu_count() or 1
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:  # the caller's torch thread count is restored: a test calling this in-process must not change later tests
        names = list(settings.tasks) if settings.tasks else tasks_with_checkpoints(data_dir)
        if not names:
            raise FileNotFoundError(f"no task in {data_dir / 'tasks'} has a checkpoint in {data_dir / 'checkpoints'}: "
                                    f"materialize proxy_checkpoint first (falconer run)")
        out.mkdir(parents=True, exist_ok=True)
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        tasks = {name: measure_task(name, settings, data_dir, work, log) for name in names}
        results = {"settings": asdict(settings) | {"threads": threads}, "machine": machine(),
                   "auto": resolve_precision("auto", settings.device), "tasks": tasks,
                   "default": choose_default(tasks, settings.max_f1_loss), "loadavg_start": load0,
                   "loadavg_end": os.getloadavg()[0], "minutes": (time.perf_counter() - t0) / 60,
                   "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": quick}
        (out / "inference.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "inference.md").write_text(markdown(results))
        plot(results, out / "inference.png")
    finally:
        torch.set_num_threads(previous_threads)
    log(f"default precision: {results['default']['precision']} ({results['default']['reason']})")
    return results


# ----------------------------------------------------------------------------------------- report


def _cell(xs: list[float]) -> str:
    return " / ".join(f"{x:.1f}" for x in xs)


def markdown(results: dict) -> str:
    """The report: how it was measured, the speed table, the F1 / agreement table and the chosen default."""
    s = results["settings"]
    quick = results.get("quick")
    cmd = "python -m falconer_assets.bench inference" + (" --quick" if quick else "")
    m = results["machine"]
    d = results["default"]
    lines = [
        f"# Proxy inference precision{' (quick)' if quick else ''}", "",
        f"Command: `{cmd}`. Each task's plan sub-tasks (`get_label` / `get_span`) over the first {s['docs']} "
        f"documents of its corpus, {s['batch_size']} windows per forward pass, {s['threads']} threads on "
        f"{m['cpu']} ({m['cores']} cores), torch {m['torch']}, device {s['device']}. Speed: {s['repeats']} rounds, "
        f"every candidate once per round in alternating order (so that other load hits all alike); docs/s per "
        f"round, and the median over rounds of the speed-up against fp32 in the same round. The 1-minute load "
        f"average was {results['loadavg_start']:.1f} at the start and {results['loadavg_end']:.1f} at the end"
        + (" (other work shared the cores: absolute rates are lower bounds; compare the speed-ups)."
           if max(results['loadavg_start'], results['loadavg_end']) > 0.75 * (m['cores'] or 1) else ".")
        + f" This invocation: {results['minutes']:.1f} min.", "",
        "![docs/s and agreement](inference.png)", "",
        f"**Default: `{d['precision']}`.** {d['reason']}. `precision=\"auto\"` resolves to `{results['auto']}` on "
        "this machine (bf16 on CUDA and on CPUs with AVX512-BF16 / AMX, else fp32; "
        "`falconer_assets/proxy/precision.py`).", "",
        "| path | speed-up vs fp32 (geometric mean over tasks) | worst ΔF1 vs fp32 (sub-task) | qualifies |",
        "|---|---|---|---|",
        *[f"| {n} | {d['geomean_speedup'][n]:.2f}x | {d['worst_f1_delta'][n][0]:+.4f} ({d['worst_f1_delta'][n][1]}) | "
          f"{'yes' if d['qualified'][n] else 'no'}{'' if n in PROXY_PATHS else ' (reference)'} |"
          for n in d["geomean_speedup"]],
        "",
        "## Speed", "",
        "| task | path | docs/s per round | median docs/s | speed-up vs fp32 (median) | prepare s | padding share |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, t in results["tasks"].items():
        for name, c in t["candidates"].items():
            pad = f"{t['padding_share']:.1%}" if name == "fp32" else ""
            lines.append(f"| {task} | {name} | {_cell(c['docs_per_s'])} | {c['median_docs_per_s']:.1f} | "
                         f"{c['median_speedup']:.2f}x | {c['prepare_s']:.1f} | {pad} |")
        for name, why in t["skipped"].items():
            lines.append(f"| {task} | {name} | skipped: {why} | | | | |")
    lines += ["", "prepare s: load the checkpoint, build the precision copy (bf16 / int8) or export and quantize the "
              "ONNX graph, warm up. padding share: of the tokens fp32's forward passes ran, those that were padding "
              "(texts sorted by length, then batched).", "",
              "## F1 against the annotator (held-out) and agreement with fp32", "",
              f"F1: label F1 or exact-span F1 on the task's held-out annotations (n docs), weighted as the `eval` "
              f"asset weighs them (fp32: with its 95% document-bootstrap interval, to show how few documents "
              f"decide it); ΔF1 against fp32 on the same documents; agreement: share of the {s['docs']} corpus "
              "documents with the same label, or the same set of spans, as fp32.", "",
              "| task | sub-task | n held-out | path | F1 | ΔF1 vs fp32 | word F1 | agreement with fp32 |",
              "|---|---|---|---|---|---|---|---|"]
    for task, t in results["tasks"].items():
        keys = list(t["candidates"]["fp32"]["agreement"])
        keys += [k for k in t["candidates"]["fp32"]["heldout"] if k not in keys]
        for key in keys:
            kind, q = key.split("|", 1)
            for name, c in t["candidates"].items():
                h = c["heldout"].get(key)
                agree = c["agreement"].get(key)
                f1 = f"{h['f1']:.3f}" if h else "-"
                if h and name == "fp32":
                    f1 += f" [{h['f1_low']:.2f}, {h['f1_high']:.2f}]"
                delta = f"{c['f1_delta'][key]:+.3f}" if h else "-"
                word = f"{h['word_f1']:.3f}" if h and "word_f1" in h else ""
                share = f"{agree:.1%}" if agree is not None else "-"
                lines.append(f"| {task} | {kind}: {q} | {h['n'] if h else 0} | {name} | {f1} | {delta} | {word} | "
                             f"{share} |")
    lines += ["", f"A path qualifies as the default when its F1 loss against fp32 is <= {s['max_f1_loss']} on every "
              "sub-task; among the proxy paths (fp32, bf16, int8) the fastest qualifying one is the default. The "
              "ONNX Runtime paths are reference points (`pip install -e '.[onnx]'`).", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Two panels: median docs/s per task and path (dots: each round); agreement with fp32 per sub-task and path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    names = list(dict.fromkeys(n for t in tasks.values() for n in t["candidates"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    width = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, t in enumerate(tasks.values()):
            c = t["candidates"].get(name)
            if c:
                x = i + (j - (len(names) - 1) / 2) * width
                xs.append(x)
                ys.append(c["median_docs_per_s"])
                ax1.plot([x] * len(c["docs_per_s"]), c["docs_per_s"], ".", color="k", markersize=3)
        ax1.bar(xs, ys, width=width, color=f"C{j}", label=name)
    ax1.set_xticks(range(len(tasks)), [t.replace("debian_", "") for t in tasks], fontsize=8)
    ax1.set_ylabel("docs/s (all sub-tasks of the plan)")
    ax1.set_title("Speed (bars: median over rounds; dots: rounds)", fontsize=10)
    ax1.legend(fontsize=7)
    ax1.grid(axis="y", alpha=0.3)
    keys = [(task, k) for task, t in tasks.items() for k in t["candidates"]["fp32"]["agreement"]]
    others = [n for n in names if n != "fp32"]
    width2 = 0.8 / max(len(others), 1)
    for j, name in enumerate(others):
        xs, ys = [], []
        for i, (task, k) in enumerate(keys):
            c = tasks[task]["candidates"].get(name)
            if c:
                xs.append(i + (j - (len(others) - 1) / 2) * width2)
                ys.append(100 * c["agreement"][k])
        ax2.bar(xs, ys, width=width2, color=f"C{names.index(name)}", label=name)
    ax2.set_xticks(range(len(keys)), [f"{k.split('|')[0]}: {k.split('|')[1][:28]}" for _, k in keys], rotation=30,
                   ha="right", fontsize=7)
    ax2.set_ylim(max(0.0, min((p.get_height() for p in ax2.patches), default=100.0) - 5), 101)
    ax2.set_ylabel("% of corpus docs answered as fp32")
    ax2.set_title("Agreement with fp32", fontsize=10)
    ax2.legend(fontsize=7, loc="lower left")
    ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
