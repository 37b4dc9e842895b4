"""Mining throughput benchmark: the proxy over growing prefixes of the whole Debian archive, against the LLM.

``python -m falconer_assets.bench mining [--quick] [--sizes 2000,8000,32000,64000] [--tasks a,b]``.

For every task of ``<data>/tasks/*.yaml`` it runs the task's plan (:func:`resolve_plan`) with the
task's proxy (:func:`resolve_proxy`) over the first N documents of a large corpus (:func:`resolve_corpus`)
for each size N, exactly as the ``mined`` asset does (:func:`falconer_assets.mining.mine_documents`,
documents batched by ``MiningConfig.batch_size``, texts per forward pass by the ``proxy`` resource's
``inference_batch_size``: :data:`MINED_BATCH_SIZE`, :data:`INFERENCE_BATCH_SIZE`). Each (task, size)
runs in a fresh process (:mod:`falconer_assets.bench.mining_worker`), so its peak RSS is its own.
Recorded: wall time of the mining pass, docs/s, prompt tokens fed to the model per second
(attention-mask tokens, padding not counted), forward time, the model's FLOPs
(:mod:`falconer_assets.bench.roofline`), peak RSS.

In the same invocation: the same plan executed by the embedded LLM (the client of the ``llm``
resource, :class:`~falconer_assets.llm.client.ChatLLM`, with its defaults, through
:class:`~falconer_assets.llm.executor.LLMPrimitives`, one call per text) on the first ``llm_docs``
documents, for the proxy / LLM docs/s ratio (LLM time is the sum of the calls' original latencies,
kept in the benchmark's LLM cache, so a cached re-run reports the real cost); and a float32 / int8
matrix-multiply microbenchmark of this machine, whose best rate is the roofline the mining's
achieved GFLOP/s is compared with.

Results: ``<out>/mining.json`` (written after every measurement; a re-run skips measurements whose
settings match unless ``force``), ``mining.md`` (:mod:`falconer_assets.bench.mining_report`) and
``mining.png``. Default ``out``: ``docs/bench``; ``--quick``: ``data/bench_quick`` (gitignored).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from falconer_assets.bench.mining_worker import PROGRESS, RESULT, corpus_files, first_documents

Log = Callable[[str], None]

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build_debian_corpus.py"
FULL_CORPUS = "debian_full"
"""Name of the sharded whole-archive corpus folder under ``<data>/corpora``."""
BUNDLED_CORPUS = "debian_packages"
APT_TRANSLATIONS = "/var/lib/apt/lists/*main_i18n_Translation-en*"


MINED_BATCH_SIZE = 512
"""Documents per plan batch: the default of the ``mined`` asset's ``MiningConfig.batch_size`` (the bench may not
import the Dagster layer; ``falconer_assets_tests/test_bench_mining.py`` checks the two agree)."""
INFERENCE_BATCH_SIZE = 64
"""Texts per forward pass: the default of the ``proxy`` resource's ``inference_batch_size`` (checked likewise)."""
LLM_MODEL = "qwen2.5-coder-1.5b"
"""The ``llm`` resource's default model; the client is :class:`~falconer_assets.llm.client.ChatLLM` with the
resource's other defaults (which are the client's)."""


@dataclass(frozen=True)
class MiningBenchSettings:
    """What one benchmark run measures.

    Attributes:
        sizes: corpus prefixes mined, in documents (a size over the corpus' documents mines all of them).
        llm_docs: documents the LLM executes the plan on (0: no LLM run).
        tasks: task names; ``None`` = every ``<data>/tasks/*.yaml``.
        batch_size: documents per plan batch; ``None`` = the ``mined`` asset's ``MiningConfig`` default.
        inference_batch_size: texts per forward pass; ``None`` = the ``proxy`` resource's default.
        threads: torch threads of the proxy and the matmul benchmark; ``None`` = all cores.
        llm_model: the embedded model (a key of ``EMBEDDED_MODELS`` or a ``.gguf`` path).
        matmul_seconds, matmul_repeats: each matmul rate is the best of ``repeats`` windows of ``seconds``.
        shards: files of the whole-archive corpus when this run builds it.
    """

    sizes: tuple[int, ...] = (2000, 8000, 32000, 64000)
    llm_docs: int = 50
    tasks: tuple[str, ...] | None = None
    batch_size: int | None = None
    inference_batch_size: int | None = None
    threads: int | None = None
    llm_model: str = LLM_MODEL
    matmul_seconds: float = 0.3
    matmul_repeats: int = 3
    shards: int = 16


FULL = MiningBenchSettings()
QUICK = MiningBenchSettings(sizes=(200, 400), llm_docs=5, tasks=("debian_game_genres",), matmul_seconds=0.1,
                            matmul_repeats=2)
"""``--quick``: one task, 200 and 400 documents, 5 LLM documents (about 2-3 minutes on 2 cores)."""


# ------------------------------------------------------------------------------------------ inputs


def apt_lists_present() -> bool:
    """True when this machine's apt lists hold the English package descriptions the corpus builder reads."""
    return bool(glob.glob(APT_TRANSLATIONS))


def build_full_corpus(target: Path, shards: int, log: Log) -> None:
    """Write the whole Debian archive as ``shards`` JSONL files in ``target`` with ``scripts/build_debian_corpus.py``.

    Raises:
        RuntimeError: the script is missing or failed (its stderr tail in the message).
    """
    if not BUILD_SCRIPT.is_file():
        raise RuntimeError(f"{BUILD_SCRIPT} not found (a source checkout is needed to build the corpus)")
    log(f"building the whole-archive corpus from the apt lists: {target} ({shards} shards)")
    proc = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--shards", str(shards), "--out", str(target)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT.name} failed: {proc.stderr[-1500:]}")
    log("  " + next((ln for ln in proc.stderr.splitlines() if "wrote" in ln), "done"))


def resolve_corpus(data_dir: Path, work: Path, need: int, quick: bool, shards: int, log: Log,
                   corpus: Path | None = None) -> tuple[Path, str]:
    """The corpus folder to mine and a sentence saying what it is.

    In order: ``corpus`` when given; ``<data>/corpora/debian_full`` when it holds ``.jsonl`` files; the
    whole archive built now from the apt lists (into ``<data>/corpora/debian_full``, or ``<work>/debian_full``
    with ``quick`` so a quick run leaves the data folder alone); with ``quick`` and no apt lists, the bundled
    2,000-record corpus when it has ``need`` documents.

    Raises:
        FileNotFoundError: no corpus can be found or built; the message says how to get one.
    """
    if corpus is not None:
        corpus_files(corpus)
        return corpus, f"`{corpus}` (given with --corpus)"
    full = data_dir / "corpora" / FULL_CORPUS
    if full.is_dir() and list(full.glob("*.jsonl")):
        return full, f"`{full}`: the whole Debian archive (scripts/build_debian_corpus.py --shards)"
    if apt_lists_present():
        target = work / FULL_CORPUS if quick else full
        if not (target.is_dir() and list(target.glob("*.jsonl"))):
            build_full_corpus(target, shards, log)
        return target, (f"`{target}`: the whole Debian archive, built from this machine's apt lists by "
                        f"scripts/build_debian_corpus.py --shards {shards}")
    bundled = data_dir / "corpora" / BUNDLED_CORPUS
    if quick and bundled.is_dir():
        n = sum(1 for f in bundled.glob("*.jsonl") for line in f.open(encoding="utf-8") if line.strip())
        if n >= need:
            log(f"no apt lists with English descriptions here ({APT_TRANSLATIONS}): using the bundled corpus")
            return bundled, f"`{bundled}`: the bundled 2,000-record sample (no apt lists on this machine)"
    raise FileNotFoundError(
        f"no large corpus: {full} is missing and this machine has no apt lists with English descriptions "
        f"({APT_TRANSLATIONS}). On Debian/Ubuntu run `apt-get update -o Acquire::Languages=en && python "
        f"scripts/build_debian_corpus.py --shards 16 --out {full}`, or pass --corpus DIR (a folder of .jsonl files).")


def resolve_plan(task, data_dir: Path, chat_factory: Callable[[], object], log: Log) -> tuple[str, str]:
    """``(plan source, origin)`` of a task, looked up as the ``plan`` asset would have made it.

    In order: ``<task>.plan.py`` beside the task file; the plan the ``plan`` asset stored in
    ``<data>/falconer.duckdb`` (opened read-only; skipped when absent or locked by a writer); a plan
    written now by the LLM planner (:func:`~falconer_assets.plan.planner.plan_with_retries`, the
    client from ``chat_factory()``).

    Raises:
        falconer_assets.plan.sandbox.PlanValidationError: the planner produced no valid plan.
    """
    if task.plan_override_path.exists():
        return task.plan_override_path.read_text(encoding="utf-8"), f"user file {task.plan_override_path.name}"
    db = data_dir / "falconer.duckdb"
    if db.is_file():
        import duckdb

        from falconer_assets.warehouse.store import read_plan

        try:
            conn = duckdb.connect(str(db), read_only=True)
            try:
                record = read_plan(conn, task.name)
            finally:
                conn.close()
        except duckdb.Error as exc:
            log(f"  cannot read {db} ({str(exc).splitlines()[0][:120]}); asking the planner")
            record = None
        if record is not None:
            return record.source, f"warehouse ({db.name}, plan asset: {record.origin})"
    from falconer_assets.plan.planner import PLANNER_MAX_TOKENS, plan_with_retries

    log(f"  no stored plan for {task.name}: asking the LLM planner")
    client = chat_factory()
    plan, attempts = plan_with_retries(lambda m: client.chat(m, max_tokens=PLANNER_MAX_TOKENS).text,
                                       task.instruction, task.fields_as_dicts())
    return plan.source, f"planned now by the LLM ({len(attempts)} attempt(s))"


def resolve_proxy(task_name: str, data_dir: Path) -> tuple[str, str]:
    """``(model path, what it is)``: the task's fine-tuned checkpoint ``<data>/checkpoints/<task>`` when
    materialized, else the metamodel (not fine-tuned), else plain all-MiniLM-L6-v2 with a fresh head
    (:func:`~falconer_assets.proxy.model.default_base_model`). Throughput depends on the architecture, which
    all three share; a base model's labels (which documents reach a plan's later steps) differ."""
    from falconer_assets.proxy.model import PROXY_META_FILE, default_base_model

    ckpt = data_dir / "checkpoints" / task_name
    if (ckpt / PROXY_META_FILE).is_file():
        return str(ckpt), f"fine-tuned checkpoint {ckpt}"
    from falconer_assets.metamodel.base_model import resolve_base_model

    try:
        return resolve_base_model("metamodel"), "metamodel (no checkpoint: not fine-tuned)"
    except FileNotFoundError:
        return default_base_model(), "all-MiniLM-L6-v2 (no checkpoint, no metamodel: fresh head)"


def plan_hash(source: str) -> str:
    """The plan's AST hash (:class:`~falconer_assets.plan.sandbox.ValidatedPlan`), for resuming."""
    from falconer_assets.plan.sandbox import validate_plan

    return validate_plan(source).ast_hash


# -------------------------------------------------------------------------------------- measuring


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def measure_size(spec: dict, log_path: Path, log: Log) -> dict:
    """Run one (task, size) measurement in a fresh worker process and return its result.

    Progress lines of the worker are relayed to ``log`` with an ETA; its stderr (library messages)
    goes to ``log_path``. The result also carries ``child_wall_s`` (the whole process, start-up and
    loading included).

    Raises:
        RuntimeError: the worker failed (exit code and the tail of its log in the message).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    result = None
    with log_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "falconer_assets.bench.mining_worker", json.dumps(spec)],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PROGRESS):
                p = json.loads(line[len(PROGRESS):])
                rate = p["done"] / p["elapsed_s"] if p["elapsed_s"] > 0 else 0.0
                eta = (p["total"] - p["done"]) / rate if rate > 0 else 0.0
                log(f"    {p['done']}/{p['total']} docs, {rate:.1f} docs/s, elapsed {_clock(p['elapsed_s'])}, "
                    f"ETA {_clock(eta)}")
            elif line.startswith(RESULT):
                result = json.loads(line[len(RESULT):])
        code = proc.wait()
    if code != 0 or result is None:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"mining worker for {spec['task']} x {spec['size']} failed (exit {code}):\n{tail}")
    result["child_wall_s"] = time.perf_counter() - t0
    return result


def measure_llm(plan_source: str, docs: list, client, log: Log) -> dict:
    """Execute the plan with the LLM (:class:`~falconer_assets.llm.executor.LLMPrimitives`) on ``docs``.

    The plan runs one document at a time (the LLM answers one text per call either way), so progress
    has a per-document ETA. ``llm_seconds`` sums the original latency of every call (from the cache
    on a re-run); ``docs_per_s`` is ``docs / llm_seconds``.

    Returns:
        ``{"docs", "calls", "cached_calls", "llm_seconds", "wall_s", "docs_per_s", "prompt_tokens",
        "completion_tokens" (the client's counters, cached calls included), "prompt_tokens_per_s", "rows",
        "docs_retrieved", "docs_rejected", "model"}``.
    """
    from falconer_assets.llm.executor import LLMPrimitives
    from falconer_assets.mining import mine_documents
    from falconer_assets.plan.sandbox import validate_plan

    prims = LLMPrimitives(client.chat, client.chat_many)
    stats0 = (client.stats.prompt_tokens, client.stats.completion_tokens)
    started = time.perf_counter()

    def progress(message: str) -> None:
        m = re.match(r"mined (\d+)/(\d+) docs", message)
        if m:
            done = int(m.group(1))
            per_doc = prims.llm_seconds / max(done, 1)
            log(f"    LLM: {done}/{len(docs)} docs, {per_doc:.1f} s/doc, ETA {_clock(per_doc * (len(docs) - done))}")

    rows, _rejects, stats = mine_documents(validate_plan(plan_source), docs, prims.get_label, prims.get_span,
                                           batch_size=1, log=progress)
    wall = time.perf_counter() - started
    anns = prims.annotations
    llm_s = prims.llm_seconds
    prompt = client.stats.prompt_tokens - stats0[0]
    return {"docs": len(docs), "calls": len(anns), "cached_calls": sum(a.cached for a in anns),
            "llm_seconds": llm_s, "wall_s": wall, "docs_per_s": len(docs) / llm_s if llm_s > 0 else 0.0,
            "prompt_tokens": prompt, "completion_tokens": client.stats.completion_tokens - stats0[1],
            "prompt_tokens_per_s": prompt / llm_s if llm_s > 0 else 0.0, "rows": len(rows),
            "docs_retrieved": stats.docs_retrieved, "docs_rejected": stats.docs_rejected,
            "model": getattr(client, "identity", getattr(client, "model", "?"))}


def machine() -> dict:
    """``{"cpu", "cores", "platform", "python", "torch"}`` of this machine."""
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__}


# -------------------------------------------------------------------------------------------- run


def _load(path: Path) -> dict:
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    return {}


def _save(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fingerprint(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run(settings: MiningBenchSettings, out: Path, work: Path, data_dir: Path = Path("data"), *,
        corpus: Path | None = None, quick: bool = False, force: bool = False, report_only: bool = False,
        log: Log = print) -> dict:
    """Run (or resume) the benchmark; write ``<out>/mining.json``, ``mining.md`` and ``mining.png``.

    A (task, size) point or an LLM run whose fingerprint (corpus, plan, proxy, batch sizes, threads;
    for the LLM also the model and the number of documents) matches a stored one is not measured again
    unless ``force``; with ``report_only`` nothing is measured. The matmul microbenchmark runs again
    whenever something is measured (or none is stored).

    Returns:
        The results dict written to ``mining.json``: ``{"settings", "machine", "corpus", "roofline",
        "tasks": {task: {"proxy", "proxy_path", "plan_origin", "plan", "llm"}}, "points": [...]}``.

    Raises:
        FileNotFoundError: no corpus (see :func:`resolve_corpus`) or an unknown task.
        RuntimeError: a worker failed.
    """
    from falconer_assets.bench import mining_report
    from falconer_assets.inputs.tasks import load_task

    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    path = out / "mining.json"
    results = _load(path)
    if report_only:
        if not results:
            raise FileNotFoundError(f"{path} does not exist: nothing to report")
        mining_report.write(results, out)
        return results
    bs, ibs = MINED_BATCH_SIZE, INFERENCE_BATCH_SIZE
    threads = settings.threads or os.cpu_count() or 1
    settings = replace(settings, batch_size=settings.batch_size or bs,
                       inference_batch_size=settings.inference_batch_size or ibs, threads=threads)
    task_names = list(settings.tasks) if settings.tasks else sorted(
        p.stem for p in (data_dir / "tasks").glob("*.yaml"))
    for name in task_names:
        if not (data_dir / "tasks" / f"{name}.yaml").is_file():
            raise FileNotFoundError(f"unknown task {name!r}: no {data_dir / 'tasks' / name}.yaml")
    corpus_dir, corpus_note = resolve_corpus(data_dir, work, max(settings.sizes), quick, settings.shards, log, corpus)
    n_corpus = sum(1 for f in corpus_files(corpus_dir) for line in f.open(encoding="utf-8") if line.strip())
    log(f"corpus: {corpus_dir} ({n_corpus} lines); tasks: {', '.join(task_names)}; sizes: "
        f"{', '.join(map(str, settings.sizes))}; {threads} threads")
    results.update(settings=asdict(settings), machine=machine(), corpus={"path": str(corpus_dir), "lines": n_corpus,
                                                                         "note": corpus_note})
    results.setdefault("tasks", {})
    results.setdefault("points", [])
    llm_holder: dict = {}

    def client():
        if "client" not in llm_holder:
            from falconer_assets.llm.client import ChatLLM

            llm_holder["client"] = ChatLLM(model=settings.llm_model, cache_path=work / "llm_cache.duckdb")
        return llm_holder["client"]

    measured = False
    t_start = time.perf_counter()
    try:
        plans = {}
        for name in task_names:
            task = load_task(data_dir / "tasks" / f"{name}.yaml")
            source, origin = resolve_plan(task, data_dir, client, log)
            proxy_path, proxy_note = resolve_proxy(name, data_dir)
            plans[name] = (source, proxy_path)
            entry = results["tasks"].setdefault(name, {})
            entry.update(proxy=proxy_note, proxy_path=proxy_path, plan_origin=origin, plan=source)
            log(f"{name}: proxy = {proxy_note}; plan from {origin}")
        for name in task_names:
            source, proxy_path = plans[name]
            for size in settings.sizes:
                fp = _fingerprint(corpus=str(corpus_dir), lines=n_corpus, plan=plan_hash(source), proxy=proxy_path,
                                  bs=settings.batch_size, ibs=settings.inference_batch_size, threads=threads)
                old = next((p for p in results["points"] if p["task"] == name and p["size"] == size), None)
                if old is not None and old.get("fingerprint") == fp and not force:
                    log(f"{name} x {size}: measured {old['measured_at']}, kept ({old['docs_per_s']:.1f} docs/s)")
                    continue
                log(f"{name} x {size} docs: mining in a fresh process")
                spec = {"task": name, "size": size, "corpus_dir": str(corpus_dir), "plan_source": source,
                        "proxy_path": proxy_path, "batch_size": settings.batch_size,
                        "inference_batch_size": settings.inference_batch_size, "threads": threads}
                point = measure_size(spec, work / "logs" / f"{name}_{size}.log", log)
                point.update(fingerprint=fp, measured_at=_now())
                results["points"] = [p for p in results["points"] if not (p["task"] == name and p["size"] == size)]
                results["points"].append(point)
                results["points"].sort(key=lambda p: (p["task"], p["size"]))
                measured = True
                _save(path, results)
                log(f"  {point['docs']} docs in {point['wall_s']:.1f} s: {point['docs_per_s']:.1f} docs/s, "
                    f"{point['tokens_per_s']:.0f} tokens/s, peak RSS {point['peak_rss_mib']:.0f} MiB")
            if settings.llm_docs > 0:
                entry = results["tasks"][name]
                docs, _ = first_documents(corpus_dir, settings.llm_docs)
                stored = entry.get("llm")
                same = stored and (stored.get("docs"), stored.get("plan_hash"), stored.get("corpus"),
                                   stored.get("llm_model")) == (len(docs), plan_hash(source), str(corpus_dir),
                                                                settings.llm_model)
                if same and not force:
                    log(f"{name}: LLM run on {len(docs)} docs measured {stored['measured_at']}, kept")
                    continue
                log(f"{name}: the same plan executed by the LLM on the first {len(docs)} docs")
                llm = measure_llm(source, docs, client(), log)
                llm.update(plan_hash=plan_hash(source), corpus=str(corpus_dir), llm_model=settings.llm_model,
                           measured_at=_now())
                entry["llm"] = llm
                measured = True
                _save(path, results)
                log(f"  LLM: {llm['calls']} calls, {llm['llm_seconds']:.1f} s, {llm['docs_per_s']:.3f} docs/s")
    finally:
        if "client" in llm_holder:
            llm_holder["client"].close()
    if measured or force or not results.get("roofline"):
        from falconer_assets.bench.roofline import EncoderDims, measure_matmul

        dims = next((p["dims"] for p in results["points"]), {"layers": 6, "hidden": 384, "intermediate": 1536})
        log("matmul microbenchmark (fp32, int8) at the proxy's shapes")
        roof = measure_matmul(EncoderDims(**dims), threads=threads, min_seconds=settings.matmul_seconds,
                              repeats=settings.matmul_repeats, log=log)
        roof.update(measured_at=_now(), loadavg=os.getloadavg()[0])
        results["roofline"] = roof
    results["invocation_minutes"] = (time.perf_counter() - t_start) / 60
    _save(path, results)
    mining_report.write(results, out, quick=quick)
    return results
