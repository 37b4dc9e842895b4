"""Mining on Ray: the plan over a corpus file's documents with Ray Data and a pool of proxy actors.

The same work as :func:`falconer_assets.mining.mine_documents`, spread over the CPUs (or GPUs) of
a Ray cluster: the documents are cut into the same plan batches
(:func:`falconer_assets.mining.batches`), one Ray Data row per batch; ``Dataset.map_batches``
with a callable class and an actor pool (Ray Data docs, "Transforming data" and the
``Dataset.map_batches`` / ``ActorPoolStrategy`` API reference) hands each row to an actor that
loaded the proxy checkpoint once (:meth:`~falconer_assets.proxy.model.NTEProxy.load`) and runs the
per-batch step :func:`falconer_assets.mining.mine_batch` on it. The driver puts the batches back
in input order and folds them with :func:`falconer_assets.mining.add_batch`: the rows, rejects and
counts of the in-process path (same batches, same model, same code). Scores are bit-identical when
the actor runs torch with the in-process thread count (1 per 1-CPU actor); with another count a
score may differ in its last float32 bit (torch's CPU kernels may split a reduction differently).

Where Ray comes from (:func:`init_ray`): ``RAY_ADDRESS`` set -> ``ray.init(address=...)`` joins
that cluster; unset -> a local Ray sized to this machine (``num_cpus=os.cpu_count()``, no
dashboard). Either way nothing of Ray reaches the terminal but errors: workers' output is not
forwarded, Ray Data's progress bars and banners are off (the logs stay in Ray's session folder).

The checkpoint: the actors must read it. On a local Ray they get the folder's path. On a cluster
(``RAY_ADDRESS``) the driver puts the folder's files in Ray's object store once and each actor
unpacks them into a temporary folder for the load (``ship_checkpoint`` of
:func:`mine_documents_ray`), so the nodes need no shared storage (the object store copies the
files once per node; a MiniLM proxy is ~90 MB). The nodes do need this package and its
dependencies installed (same versions as the driver). ``ship_checkpoint=False`` hands the path
instead, for a checkpoint dir that every node mounts at the same path.

Ray is an optional dependency (the ``ray`` extra, also in ``test``); it is imported only when a
function here needs it. No Dagster here: the ``mined`` asset chooses the executor and reports it.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from falconer_assets.inputs.corpus import Document
from falconer_assets.mining import MiningStats, add_batch, batches, mine_batch
from falconer_assets.plan.limits import DEFAULT_LIMITS, PlanLimits
from falconer_assets.plan.sandbox import ValidatedPlan
from falconer_assets.proxy.health import count_yes
from falconer_assets.warehouse.rows import MinedRow, RejectRow

EXECUTOR_ENV = "FALCONER_EXECUTOR"
"""Environment variable choosing where ``mined`` runs the plan: unset / ``in-process`` or ``ray``."""

Executor = Literal["in-process", "ray"]

_INSTALL_HINT = "FALCONER_EXECUTOR=ray needs Ray Data: pip install 'falconer-assets[ray]' (or pip install 'ray[data]')"


def mining_executor(env: Mapping[str, str] | None = None) -> Executor:
    """The executor named by ``FALCONER_EXECUTOR`` in ``env`` (default ``os.environ``).

    Unset or empty, ``in-process`` (also ``inprocess``, ``local``): ``"in-process"``; ``ray``:
    ``"ray"``. Case and surrounding blanks are ignored.

    Raises:
        ValueError: for any other value (the message lists the accepted ones).
    """
    raw = (os.environ if env is None else env).get(EXECUTOR_ENV, "")
    value = raw.strip().lower()
    if value in ("", "in-process", "inprocess", "local"):
        return "in-process"
    if value == "ray":
        return "ray"
    raise ValueError(f"{EXECUTOR_ENV}={raw!r}: expected 'in-process' (the default) or 'ray'")


def ray_address(env: Mapping[str, str] | None = None) -> str | None:
    """The cluster address in ``RAY_ADDRESS`` (``None`` when unset or blank: a local Ray)."""
    value = (os.environ if env is None else env).get("RAY_ADDRESS", "").strip()
    return value or None


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] extra: pyarrow, pandas)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(_INSTALL_HINT) from exc
    return ray


def _quiet_ray_data() -> None:
    """Ray Data without terminal output in this process: no progress bars, no execution banner or
    stats, and its console handler at ERROR (its log file in the Ray session folder keeps everything)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


def init_ray() -> str:
    """Connect this process to Ray once and describe where it runs (for the ``executor`` metadata).

    Already connected (``ray.is_initialized()``, e.g. a previous partition or a test fixture):
    that connection is kept. Else with ``RAY_ADDRESS`` set: ``ray.init(address=RAY_ADDRESS)``
    (a ``ray://`` client address or a cluster's GCS ``host:port``). Else a new local Ray:
    ``ray.init(num_cpus=os.cpu_count(), include_dashboard=False)``. Either way the workers'
    output is not forwarded to this terminal (``log_to_driver=False``), Ray's driver logger is at
    ERROR (``logging_level``), and Ray Data prints no progress bars and logs to the terminal only
    errors; the full logs stay in Ray's session folder (``/tmp/ray/session_latest/logs``). A local
    Ray started here lives until this process exits (Ray shuts it down then) or
    :func:`shutdown_ray`, so the next partition mined by this process reuses it.

    Returns:
        ``"ray (local, N CPUs)"`` or ``"ray (RAY_ADDRESS=<address>, N CPUs)"``, N the cluster's CPUs
        now (``ray.cluster_resources()``).

    Raises:
        ImportError: Ray Data is not installed (message names the extra).
        ConnectionError: (or another error of ``ray.init``) ``RAY_ADDRESS`` names no reachable cluster.
    """
    ray = _ray()
    address = ray_address()
    if not ray.is_initialized():
        common = dict(log_to_driver=False, logging_level=logging.ERROR)
        if address is not None:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **common)
    _quiet_ray_data()
    cpus = int(ray.cluster_resources().get("CPU", 0))
    where = "local" if address is None else f"RAY_ADDRESS={address}"
    return f"ray ({where}, {cpus} CPUs)"


def shutdown_ray() -> None:
    """``ray.shutdown()`` if this process is connected (a no-op otherwise, or without Ray installed)."""
    try:
        import ray
    except ImportError:  # pragma: no cover
        return
    if ray.is_initialized():
        ray.shutdown()


@dataclass
class RayMiningResult:
    """The Ray pass over one corpus file: what :func:`mine_documents` returns, plus the proxy's counts.

    Attributes:
        rows, rejects, stats: as :func:`falconer_assets.mining.mine_documents` returns them, in
            input order; ``stats.seconds`` is the wall time of the Ray job (actor start-up and
            checkpoint loading included).
        yes_counts: ``{instruction: [yes, n]}`` of every ``get_label`` call, summed over the batches
            (what :func:`falconer_assets.proxy.health.count_yes` tallies in-process).
        multi_window_docs: distinct documents (by text) longer than the proxy's ``max_length`` in
            some call (:attr:`NTEProxy.window_stats`'s ``multi_window_docs`` in-process).
        actors: proxy actors in the pool; batches: plan batches (Ray Data rows) run.
        device: what the actors ran on (``cpu`` or ``cuda``); checkpoint_shipped: whether the
            checkpoint went through the object store instead of a path.
    """

    rows: list[MinedRow]
    rejects: list[RejectRow]
    stats: MiningStats
    yes_counts: dict[str, list[int]] = field(default_factory=dict)
    multi_window_docs: int = 0
    actors: int = 0
    batches: int = 0
    device: str = "cpu"
    checkpoint_shipped: bool = False


def _pack_checkpoint(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative POSIX path -> bytes)."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _no_actor_restarts() -> dict:
    """``{"max_restarts": 0}`` for ``map_batches`` where this Ray still takes extra remote keywords, else ``{}``.

    Ray Data restarts dead actors by default (``max_restarts=-1``), which is what a cluster that
    loses nodes needs. On a local Ray an actor dies only of a real fault (out of memory, a crash),
    so it fails at once instead, and Ray's core worker does not print its restart caveat about
    constructor arguments kept in the object store (ray-project/ray#53727) to the terminal. Ray
    2.60 deprecates the extra keywords (to be removed in 2.64): without them, Ray's default stays.
    """
    import inspect

    import ray.data

    params = inspect.signature(ray.data.Dataset.map_batches).parameters.values()
    return {"max_restarts": 0} if any(p.kind is p.VAR_KEYWORD for p in params) else {}


class _MineActor:
    """A Ray Data actor: loads the proxy once, then mines one plan batch per input row.

    ``checkpoint`` is a folder path (str) or a one-item list holding the ``ObjectRef`` of
    :func:`_pack_checkpoint`'s dict (wrapped, so Ray hands the reference through unresolved).
    """

    def __init__(self, plan: ValidatedPlan, checkpoint, device: str, inference_batch_size: int,
                 torch_threads: int, precision: str = "fp32", limits: PlanLimits = DEFAULT_LIMITS) -> None:
        import torch

        from falconer_assets.proxy.model import NTEProxy

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        if isinstance(checkpoint, list):
            import ray

            # unpacked for the load only: NTEProxy.load reads everything it needs, the folder goes at once
            with tempfile.TemporaryDirectory(prefix="falconer-ckpt-") as tmp:
                for rel, data in ray.get(checkpoint[0]).items():
                    target = Path(tmp) / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                self.model = NTEProxy.load(tmp, device=device, precision=precision)
        else:
            self.model = NTEProxy.load(checkpoint, device=device, precision=precision)
        self.plan = plan
        self.bs = inference_batch_size
        self.limits = limits

    def __call__(self, batch):
        import pyarrow as pa

        indexes, payloads = [], []
        for item in batch.to_pylist():
            docs = [Document(i, t) for i, t in zip(item["ids"], item["texts"])]
            counts: dict[str, list[int]] = {}
            messages: list[str] = []
            self.model.window_stats.reset()
            get_label = count_yes(lambda texts, q: self.model.get_label(texts, q, batch_size=self.bs), counts)
            get_span = lambda texts, q: self.model.get_span(texts, q, batch_size=self.bs)  # noqa: E731
            result = mine_batch(self.plan, docs, get_label, get_span, log=messages.append, limits=self.limits)
            multi = [k for k, d in enumerate(docs) if self.model.window_stats.is_multi_window(d.text)]
            indexes.append(item["index"])
            payloads.append(pickle.dumps((result, counts, multi, messages), protocol=pickle.HIGHEST_PROTOCOL))
        return pa.table({"index": pa.array(indexes, pa.int64()), "payload": pa.array(payloads, pa.binary())})


def mine_documents_ray(
    plan: ValidatedPlan,
    docs: Sequence[Document],
    checkpoint: str | Path,
    *,
    device: str = "auto",
    inference_batch_size: int = 64,
    batch_size: int = 256,
    actors: int = 0,
    cpus_per_actor: float = 1.0,
    ship_checkpoint: bool | None = None,
    precision: str = "fp32",
    limits: PlanLimits = DEFAULT_LIMITS,
    log: Callable[[str], None] = lambda _msg: None,
) -> RayMiningResult:
    """Execute ``plan`` over ``docs`` on Ray: the documents of :func:`mine_documents`, the same rows.

    ``docs`` are cut into plan batches of ``batch_size`` (:func:`falconer_assets.mining.batches`),
    one Ray Data row each (``ray.data.from_items``, one block per batch), and
    ``Dataset.map_batches(_MineActor, batch_size=1, compute=ActorPoolStrategy(size=actors))``
    runs them: each actor loads the checkpoint once (``NTEProxy.load(checkpoint, device)``) and
    runs :func:`falconer_assets.mining.mine_batch` per row, with the proxy's ``get_label`` /
    ``get_span`` at ``inference_batch_size`` texts per forward pass. Results stream back
    (``iter_rows``), are sorted by batch index (input order) and folded with
    :func:`falconer_assets.mining.add_batch`; a batch's retry messages reach ``log`` in order at
    the end.

    Connects with :func:`init_ray` if this process is not connected yet.

    Args:
        plan, docs: as :func:`falconer_assets.mining.mine_documents`.
        checkpoint: the proxy's checkpoint folder (a :meth:`NTEProxy.save` output).
        device: ``"auto"``: one actor per GPU (``num_gpus=1``, ``cuda``) when the cluster has GPUs,
            else CPU actors; ``"cpu"``; ``"cuda"`` / ``"cuda:N"`` (GPU actors, one GPU each: Ray
            picks the GPU, the actor uses ``cuda``).
        inference_batch_size: texts per forward pass inside an actor.
        batch_size: documents per plan batch (the unit an actor takes), as in-process.
        actors: pool size; ``0``: the cluster's GPUs (GPU actors), else its CPUs // ``cpus_per_actor``;
            never more than the number of batches.
        cpus_per_actor: Ray CPUs reserved per CPU actor; also torch's intra-op threads in the
            actor (rounded down, at least 1). GPU actors reserve 1 CPU.
        ship_checkpoint: put the checkpoint's files in the object store for the actors to unpack
            (no shared storage needed) instead of handing them the path; ``None``: ship when
            ``RAY_ADDRESS`` is set (a cluster), use the path on a local Ray.
        precision: the actors' inference precision (``NTEProxy.load(..., precision=...)``: ``fp32``,
            ``bf16``, ``int8`` or ``auto``, resolved on each actor's own hardware).
        limits: the plan's :class:`~falconer_assets.plan.limits.PlanLimits` on each actor (its plan worker).
        log: progress lines (``mined i/N docs ...``) and the batches' retry messages.

    Returns:
        A :class:`RayMiningResult`; for ``docs == []`` an empty one, without touching Ray.

    Raises:
        ValueError: ``batch_size < 1``, ``actors < 0``, ``cpus_per_actor <= 0``, or an unknown ``device``.
        FileNotFoundError: ``checkpoint`` is not a folder.
        ImportError: Ray Data is not installed.
        ray.exceptions.RayTaskError: an actor failed (e.g. the checkpoint path does not exist on
            a worker node); the plan's own errors never surface here, they become rejects.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if actors < 0:
        raise ValueError(f"actors must be >= 0 (0: one per CPU or GPU), got {actors}")
    if cpus_per_actor <= 0:
        raise ValueError(f"cpus_per_actor must be > 0, got {cpus_per_actor}")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda' on Ray, got {device!r}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"proxy checkpoint folder {checkpoint} does not exist")
    stats = MiningStats(docs_in=len(docs))
    if not docs:
        return RayMiningResult([], [], stats)
    t0 = time.perf_counter()
    ray = _ray()
    if not ray.is_initialized():
        init_ray()
    _quiet_ray_data()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
    items = [{"index": k, "ids": [d.id for d in b], "texts": [d.text for d in b]}
             for k, b in enumerate(batches(docs, batch_size))]
    if actors == 0:
        actors = max(1, gpus if use_gpu else int(resources.get("CPU", 1) // cpus_per_actor))
    actors = min(actors, len(items))
    on_cluster = ray_address() is not None
    ship = on_cluster if ship_checkpoint is None else ship_checkpoint
    source = [ray.put(_pack_checkpoint(checkpoint))] if ship else str(checkpoint.resolve())
    log(f"mining {len(docs)} docs on Ray: {len(items)} batches of <= {batch_size}, {actors} "
        f"{'GPU' if use_gpu else 'CPU'} actor(s), checkpoint {'via the object store' if ship else 'by path'}")

    ds = ray.data.from_items(items, override_num_blocks=len(items))
    with warnings.catch_warnings():  # max_restarts is a deprecated extra keyword (see _no_actor_restarts)
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            _MineActor,
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs=dict(plan=plan, checkpoint=source, device="cuda" if use_gpu else "cpu",
                                       inference_batch_size=inference_batch_size,
                                       torch_threads=0 if use_gpu else max(1, int(cpus_per_actor)),
                                       precision=precision, limits=limits),
            num_cpus=1 if use_gpu else cpus_per_actor,
            num_gpus=1 if use_gpu else 0,
            **({} if on_cluster else _no_actor_restarts()),
        )
    results: dict[int, tuple] = {}
    done_docs = 0
    for row in ds.iter_rows():
        k = int(row["index"])
        results[k] = pickle.loads(row["payload"])
        done_docs += len(items[k]["ids"])
        elapsed = time.perf_counter() - t0
        log(f"mined {done_docs}/{len(docs)} docs on Ray ({len(results)}/{len(items)} batches), "
            f"{done_docs / max(elapsed, 1e-9):.1f} docs/s")
    missing = sorted(set(range(len(items))) - set(results))
    if missing:  # pragma: no cover - Ray Data returns every row or raises
        raise RuntimeError(f"Ray returned no result for plan batches {missing[:10]}")

    rows: list[MinedRow] = []
    rejects: list[RejectRow] = []
    yes_counts: dict[str, list[int]] = {}
    multi_texts: set[str] = set()
    for k in range(len(items)):
        batch, counts, multi, messages = results[k]
        for message in messages:
            log(message)
        add_batch(stats, rows, rejects, batch)
        for q, (yes, n) in counts.items():
            tally = yes_counts.setdefault(q, [0, 0])
            tally[0] += yes
            tally[1] += n
        multi_texts.update(items[k]["texts"][i] for i in multi)
    stats.rows = len(rows)
    stats.seconds = time.perf_counter() - t0
    return RayMiningResult(rows, rejects, stats, yes_counts, len(multi_texts), actors=actors, batches=len(items),
                           device="cuda" if use_gpu else "cpu", checkpoint_shipped=ship)

