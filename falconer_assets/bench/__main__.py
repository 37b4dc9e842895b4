"""``python -m falconer_assets.bench quality [--quick] [--out DIR]``: proxy learning curves.

Writes ``<out>/quality.json`` (every point; a re-run resumes from it), ``quality.md`` (the
table), ``quality.png`` (all panels) and ``quality_<dataset>.png`` (one panel each), and prints the
table. The learning curves belong to this command; the ``eval`` asset does not read them.
Default ``--out``: ``docs/bench`` for the full grid, ``data/bench_quick`` for ``--quick``.

``python -m falconer_assets.bench mining [--quick] [--sizes ...] [--tasks ...]``: mining throughput of the
proxy over growing prefixes of the whole Debian archive, against the LLM and this machine's matmul peak
(:mod:`falconer_assets.bench.mining`; ``mining.json``, ``mining.md``, ``mining.png``).

``python -m falconer_assets.bench planning [--quick] [--model 0.5b|1.5b|all] [--both]``: the LLM planner scored by
execution on 42 instructions in the paper's Table 1 categories (:mod:`falconer_assets.bench.planning`;
``planning.json``, ``planning.md``, ``planning.png``).

``python -m falconer_assets.bench inference [--quick] [--docs N] [--tasks ...] [--candidates ...]``: docs/s, held-out
F1 and agreement with fp32 of the proxy's inference paths (fp32, bf16, int8, ONNX Runtime), and the default
precision they justify (:mod:`falconer_assets.bench.inference`; ``inference.json``, ``.md``, ``.png``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="python -m falconer_assets.bench", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality", help="proxy learning curves (F1 vs training samples)")
    q.add_argument("--quick", action="store_true", help="tiny grid, a few minutes")
    q.add_argument("--out", default=None)
    q.add_argument("--datasets", default=None, help="comma list, e.g. wnut16,debian")
    q.add_argument("--bases", default=None, help="comma list of minilm,mpnet,metamodel")
    q.add_argument("--sizes", default=None, help="comma list, 0 = zero-shot")
    q.add_argument("--example-budget", type=int, default=None,
                   help="examples seen per fine-tuning run (default: the plan's; see train_config)")
    q.add_argument("--report", action="store_true",
                   help="only re-render the table and plots from the points already computed")
    e = sub.add_parser("e2e", help="whole Falconer runs vs gold: LLM alone, proxy, cascade")
    e.add_argument("--quick", action="store_true", help="one small task, a few minutes")
    e.add_argument("--tasks", default=None, help="comma list (default: all; --quick: debian_games)")
    e.add_argument("--out", default=None)
    e.add_argument("--work", default=None, help="checkpoints, raw outputs and the LLM cache (default data/bench_e2e)")
    e.add_argument("--stages", choices=("llm", "all"), default="all",
                   help="llm: only plan, annotate and the LLM-alone run (warms the LLM cache)")
    e.add_argument("--llm-docs", type=int, default=None, help="LLM-alone on a seeded subset of the test docs")
    e.add_argument("--test-docs", type=int, default=None)
    e.add_argument("--model", default=None, help="embedded model name, or a remote model with --base-url")
    e.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for the LLM")
    e.add_argument("--base-model", default=None, help="proxy base: metamodel, minilm, mpnet")
    e.add_argument("--force", action="store_true", help="re-run tasks that already have results")
    e.add_argument("--report", action="store_true", help="only rebuild the report from the raw outputs")
    m = sub.add_parser("mining", help="mining throughput vs corpus size: proxy, LLM, matmul roofline")
    m.add_argument("--quick", action="store_true", help="one task, 200 and 400 docs, 5 LLM docs (2-3 min)")
    m.add_argument("--sizes", default=None, help="comma list of corpus prefixes, e.g. 2000,8000,32000,64000")
    m.add_argument("--tasks", default=None, help="comma list of task names (default: all; --quick: debian_game_genres)")
    m.add_argument("--llm-docs", type=int, default=None, help="documents the LLM runs the plan on (0: none)")
    m.add_argument("--out", default=None, help="results folder (default docs/bench; --quick: data/bench_quick)")
    m.add_argument("--work", default=None,
                   help="worker logs, LLM cache, a built corpus (default data/bench_mining; --quick: data/bench_mining_quick)")
    m.add_argument("--data", default="data", help="the data folder: tasks, checkpoints, warehouse, corpora")
    m.add_argument("--corpus", default=None, help="a corpus folder of .jsonl files (default: data/corpora/debian_full, "
                                                  "built from the apt lists when missing)")
    m.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    m.add_argument("--force", action="store_true", help="measure again what is already measured")
    m.add_argument("--report", action="store_true", help="only rebuild mining.md and mining.png from mining.json")
    lc = sub.add_parser("llm", help="annotation calls/s vs concurrent requests and server slots")
    lc.add_argument("--quick", action="store_true", help="6 docs, 1 and 2 slots (about a minute)")
    lc.add_argument("--docs", type=int, default=None, help="label prompts per setting (default 32)")
    lc.add_argument("--slots", default=None, help="comma list of slots (= requests in flight), e.g. 1,2,4")
    lc.add_argument("--out", default=None, help="results folder (default docs/bench; --quick: data/bench_quick)")
    lc.add_argument("--model", default="qwen2.5-coder-1.5b", help="embedded model, or a remote model with --base-url")
    lc.add_argument("--base-url", default=None, help="an OpenAI-compatible endpoint instead of the embedded server")
    inf = sub.add_parser("inference", help="proxy inference paths (fp32, bf16, int8, ONNX): docs/s, F1, agreement")
    inf.add_argument("--quick", action="store_true", help="one task, 48 docs, fp32/bf16/int8 (under 2 min)")
    inf.add_argument("--docs", type=int, default=None, help="corpus documents timed per path and round")
    inf.add_argument("--repeats", type=int, default=None, help="timing rounds (order alternates between rounds)")
    inf.add_argument("--tasks", default=None, help="comma list (default: every task with a checkpoint)")
    inf.add_argument("--candidates", default=None, help="comma list of fp32,bf16,int8,onnx_fp32,onnx_int8")
    inf.add_argument("--device", default=None, help="cpu (default) or cuda")
    inf.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    inf.add_argument("--data", default="data", help="the data folder: tasks, checkpoints, warehouse, corpora")
    inf.add_argument("--out", default=None, help="results folder (default docs/bench; --quick: data/bench_quick)")
    inf.add_argument("--work", default=None, help="exported ONNX graphs (default data/bench_inference)")
    inf.add_argument("--report", action="store_true", help="only rebuild inference.md and inference.png from the json")
    pl = sub.add_parser("planning", help="the planner scored by execution on 42 instructions (paper Table 1's categories)")
    pl.add_argument("--quick", action="store_true", help="6 instructions (one or two per category)")
    pl.add_argument("--model", default="1.5b", help="embedded model: 0.5b, 1.5b or all (default 1.5b)")
    pl.add_argument("--base-url", default=None, help="an OpenAI-compatible endpoint instead of the embedded models")
    pl.add_argument("--api-model", default=None, help="the model name at --base-url")
    pl.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key for --base-url")
    pl.add_argument("--no-examples", action="store_true", help="plan without the in-context examples")
    pl.add_argument("--both", action="store_true", help="plan with and without the in-context examples")
    pl.add_argument("--cases", default=None, help="comma list of case ids (default: all; --quick: the quick subset)")
    pl.add_argument("--budget-min", type=float, default=None, help="start no new case after this many minutes")
    pl.add_argument("--out", default=None, help="results folder (default docs/bench; --quick: data/bench_quick)")
    pl.add_argument("--threads", type=int, default=None, help="CPU threads of the embedded model (default: all cores)")
    pl.add_argument("--report", action="store_true", help="only rebuild planning.md and planning.png from the json")
    args = parser.parse_args(argv)
    if args.cmd == "planning":
        return _planning(args)
    if args.cmd == "inference":
        return _inference(args)
    if args.cmd == "e2e":
        return _e2e(args)
    if args.cmd == "mining":
        return _mining(args)
    if args.cmd == "llm":
        return _llm(args)

    import dataclasses

    import torch

    from falconer_assets.bench import quality as qb

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    plan = qb.QUICK if args.quick else qb.FULL
    if args.datasets:
        plan = dataclasses.replace(plan, datasets=tuple(args.datasets.split(",")))
    if args.bases:
        plan = dataclasses.replace(plan, bases=tuple(args.bases.split(",")))
    if args.sizes:
        plan = dataclasses.replace(plan, sizes=tuple(int(s) for s in args.sizes.split(",")))
    if args.example_budget:
        plan = dataclasses.replace(plan, example_budget=args.example_budget)
    out = Path(args.out or ("data/bench_quick" if args.quick else "docs/bench"))
    t0 = time.perf_counter()
    rows = qb.run(plan, out / "quality.json", log=lambda m: print(m, flush=True), train=not args.report)
    table = qb.markdown_table(rows, plan)
    minutes = (time.perf_counter() - t0) / 60
    train_min = sum(r["train_seconds"] + r["eval_seconds"] for r in rows) / 60
    header = (
        f"# Proxy quality benchmark{' (quick)' if args.quick else ''}\n\n"
        f"Command: `python -m falconer_assets.bench quality{' --quick' if args.quick else ''}`. "
        f"F1 on each source's test split (at most {plan.span_test_cap or 'all'} WNUT-16 tweets x 10 "
        f"questions, {plan.test_cap or 'all'} records of the others); "
        f"0 = zero-shot. At most max({plan.example_budget}, min(n, {2 * plan.example_budget})) "
        f"examples seen per fine-tuning run. "
        f"Compute in the points below: {train_min:.1f} min (this invocation: {minutes:.1f} min, "
        f"{torch.get_num_threads()} threads).\n\n![learning curves](quality.png)\n\n"
    )
    (out / "quality.md").write_text(header + table)
    qb.plot(rows, plan, out / "quality.png")
    for d in plan.datasets:
        qb.plot(rows, plan, out / f"quality_{d}.png", dataset=d)
    print(table)
    return 0


def _e2e(args) -> int:
    """``bench e2e``: see :mod:`falconer_assets.bench.e2e`."""
    import dataclasses

    import torch

    from falconer_assets.bench import e2e

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    settings = e2e.QUICK if args.quick else e2e.FULL
    updates = {k: v for k, v in (("llm_docs", args.llm_docs), ("test_docs", args.test_docs), ("llm_model", args.model),
                                 ("base_url", args.base_url), ("base_model", args.base_model)) if v is not None}
    settings = dataclasses.replace(settings, **updates)
    if settings.base_model in ("minilm", "mpnet"):  # a fresh head needs the fresh-head recipe (docs/proxy.md)
        from falconer_assets.proxy.training import FRESH_HEAD_RECIPE

        keep = {k: getattr(settings.train, k) for k in ("epochs", "patience")}
        settings = dataclasses.replace(settings, train=FRESH_HEAD_RECIPE.model_copy(update=keep))
    tasks = args.tasks.split(",") if args.tasks else (["debian_games"] if args.quick else list(e2e.GOLD_TASKS))
    out = Path(args.out or ("data/bench_quick" if args.quick else "docs/bench"))
    work = Path(args.work or ("data/bench_e2e_quick" if args.quick else "data/bench_e2e"))
    t0 = time.perf_counter()
    scores = e2e.run(tasks, settings, out, work, log=lambda m: print(m, flush=True), stages=args.stages,
                     force=args.force, report_only=args.report)
    header = (f"# End-to-end gold benchmark{' (quick)' if args.quick else ''}\n\n"
              f"Command: `python -m falconer_assets.bench e2e{' --quick' if args.quick else ''}`. "
              f"LLM: {settings.llm_model}; proxy base: {settings.base_model}; this invocation "
              f"{(time.perf_counter() - t0) / 60:.1f} min.\n\n![F1 vs LLM share](e2e.png)\n\n")
    text = e2e.markdown(scores, settings, header)
    (out / "e2e.md").write_text(text)
    print(text)
    return 0


def _mining(args) -> int:
    """``bench mining``: see :mod:`falconer_assets.bench.mining`."""
    import dataclasses
    import logging
    import warnings

    from falconer_assets.bench import mining

    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    settings = mining.QUICK if args.quick else mining.FULL
    updates = {}
    if args.sizes:
        updates["sizes"] = tuple(int(s) for s in args.sizes.split(","))
    if args.tasks:
        updates["tasks"] = tuple(args.tasks.split(","))
    if args.llm_docs is not None:
        updates["llm_docs"] = args.llm_docs
    if args.threads:
        updates["threads"] = args.threads
    settings = dataclasses.replace(settings, **updates)
    out = Path(args.out or ("data/bench_quick" if args.quick else "docs/bench"))
    work = Path(args.work or ("data/bench_mining_quick" if args.quick else "data/bench_mining"))
    try:
        mining.run(settings, out, work, Path(args.data), corpus=Path(args.corpus) if args.corpus else None,
                   quick=args.quick, force=args.force, report_only=args.report, log=lambda m: print(m, flush=True))
    except FileNotFoundError as exc:
        print(f"bench mining: {exc}", file=sys.stderr)
        return 2
    print((out / "mining.md").read_text())
    return 0


def _inference(args) -> int:
    """``bench inference``: see :mod:`falconer_assets.bench.inference`."""
    import dataclasses
    import logging
    import warnings

    from falconer_assets.bench import inference

    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    settings = inference.QUICK if args.quick else inference.FULL
    updates = {k: v for k, v in (("docs", args.docs), ("repeats", args.repeats), ("device", args.device),
                                 ("threads", args.threads)) if v is not None}
    if args.tasks:
        updates["tasks"] = tuple(args.tasks.split(","))
    if args.candidates:
        updates["candidates"] = tuple(args.candidates.split(","))
    settings = dataclasses.replace(settings, **updates)
    out = Path(args.out or ("data/bench_quick" if args.quick else "docs/bench"))
    try:
        inference.run(settings, out, Path(args.work or "data/bench_inference"), Path(args.data), quick=args.quick,
                      report_only=args.report, log=lambda m: print(m, flush=True))
    except FileNotFoundError as exc:
        print(f"bench inference: {exc}", file=sys.stderr)
        return 2
    print((out / "inference.md").read_text())
    return 0


def _planning(args) -> int:
    """``bench planning``: see :mod:`falconer_assets.bench.planning`."""
    from falconer_assets.bench import planning

    if args.base_url:
        if not args.api_model:
            print("bench planning: --base-url needs --api-model", file=sys.stderr)
            return 2
        models = [planning.ModelSpec(args.api_model, args.base_url, os.environ.get(args.api_key_env, "sk-no-key"))]
    elif args.model == "all":
        models = [planning.ModelSpec(planning.EMBEDDED[k]) for k in ("1.5b", "0.5b")]
    elif args.model in planning.EMBEDDED:
        models = [planning.ModelSpec(planning.EMBEDDED[args.model])]
    else:
        print(f"bench planning: --model must be 0.5b, 1.5b or all, got {args.model!r}", file=sys.stderr)
        return 2
    modes = (True, False) if args.both else ((False,) if args.no_examples else (True,))
    cases = tuple(args.cases.split(",")) if args.cases else planning.default_cases(args.quick)
    out = Path(args.out or ("data/bench_quick" if args.quick else "docs/bench"))
    t0 = time.perf_counter()
    if args.report:
        rows = planning._load(out / "planning.json")
    else:
        try:
            rows = planning.run(models, cases, modes, out / "planning.json", log=lambda m: print(m, flush=True),
                                budget_s=args.budget_min * 60 if args.budget_min else None, threads=args.threads)
        except KeyError as exc:
            print(f"bench planning: unknown case {exc}", file=sys.stderr)
            return 2
    rows = planning.rescore(rows, out / "planning.json")  # the current oracle, no LLM call
    header = (f"# Planning benchmark{' (quick)' if args.quick else ''}\n\n"
              f"Command: `python -m falconer_assets.bench planning [--quick] [--model 0.5b|1.5b|all] [--both]`; "
              f"planner version {planning.planner_version()}; this invocation {(time.perf_counter() - t0) / 60:.1f} min. "
              "Each instruction of `falconer_assets/bench/planning_cases.py` is planned by the LLM planner (3 "
              "attempts, errors and the dry run fed back, retries sampled at temperature 0.7) and the plan is "
              "run on a synthetic corpus (32 package descriptions or 32 product reviews with known attributes) "
              "with oracle get_label/get_span that answer from those attributes; it scores when its output "
              "table equals the expected one. Any correct plan counts.\n\n![accuracy per category](planning.png)\n\n")
    text = planning.markdown(rows, header)
    out.mkdir(parents=True, exist_ok=True)
    (out / "planning.md").write_text(text, encoding="utf-8")
    planning.plot(rows, out / "planning.png")
    print(text)
    return 0


def _llm(args) -> int:
    """``bench llm``: see :mod:`falconer_assets.bench.llm_concurrency`."""
    from falconer_assets.bench import llm_concurrency as lb

    settings = lb.QUICK if args.quick else lb.FULL
    if args.slots:
        settings = tuple(lb.Setting(int(n), int(n)) for n in args.slots.split(","))
    out = Path(args.out or ("data/bench_quick" if args.quick else "docs/bench"))
    lb.run(settings, args.docs or (6 if args.quick else 32), out, model=args.model, base_url=args.base_url,
           log=lambda m: print(m, flush=True))
    print((out / "llm.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
