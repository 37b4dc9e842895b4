"""The report of ``bench mining``: ``mining.md`` (tables and their reading) and ``mining.png`` (time vs corpus size).

Everything here is computed from ``mining.json`` (:func:`falconer_assets.bench.mining.run`), so
``python -m falconer_assets.bench mining --report`` rebuilds the report without measuring.
"""

from __future__ import annotations

import math
from pathlib import Path

from falconer_assets.bench.roofline import EncoderDims, flops_per_token


def shares(point: dict, roofline: dict | None) -> tuple[float | None, float | None]:
    """``(fp32 share, int8 share)``: the point's achieved GFLOP/s (useful model FLOPs / mining wall time)
    over the measured fp32 matmul peak and over the int8 one (``None`` where no peak was measured)."""
    if not roofline:
        return None, None
    fp32 = roofline.get("fp32_peak_gflops")
    int8 = roofline.get("int8_peak_gops")
    return (point["gflops"] / fp32 if fp32 else None), (point["gflops"] / int8 if int8 else None)


def scaling_exponent(points: list[dict]) -> float | None:
    """Least-squares slope of log(wall time) against log(documents) (1.0 = time linear in the corpus size);
    ``None`` with fewer than two distinct sizes."""
    pts = [(math.log(p["docs"]), math.log(p["wall_s"])) for p in points if p["docs"] > 0 and p["wall_s"] > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def _num(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _measured_minutes(results: dict) -> float:
    """Minutes the stored measurements took: every worker process and every LLM run."""
    seconds = sum(p.get("child_wall_s", p["wall_s"]) for p in results.get("points", []))
    seconds += sum((e.get("llm") or {}).get("wall_s", 0.0) for e in results.get("tasks", {}).values())
    return seconds / 60


def _by_task(results: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in sorted(results.get("points", []), key=lambda p: (p["task"], p["docs"])):
        out.setdefault(p["task"], []).append(p)
    return out


def markdown(results: dict, quick: bool = False) -> str:
    """``mining.md``: the command, machine and corpus, the proxy table, the LLM table, the matmul roofline,
    the FLOPs formula and the reading of the numbers."""
    roof = results.get("roofline") or {}
    m = results.get("machine", {})
    st = results.get("settings", {})
    by_task = _by_task(results)
    tasks = results.get("tasks", {})
    sizes = ",".join(str(s) for s in st.get("sizes", []))
    cmd = "python -m falconer_assets.bench mining" + (" --quick" if quick else f" --sizes {sizes}")
    lines = [f"# Mining throughput benchmark{' (quick)' if quick else ''}", "",
             f"Command: `{cmd}`. Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
             f"{st.get('threads')} torch threads, torch {m.get('torch', '?')}. Corpus: {results['corpus']['note']} "
             f"({results['corpus']['lines']:,} lines; the first N documents, a uniform sample of it). Plan batches of "
             f"{st.get('batch_size')} documents, {st.get('inference_batch_size')} texts per forward pass (the `mined` "
             f"asset's defaults); each size in a fresh process. Measurement time in these results: "
             f"{_measured_minutes(results):.1f} min (this invocation: {results.get('invocation_minutes', 0):.1f} min).",
             "",
             "![time vs corpus size](mining.png)", "",
             "## The proxy", "",
             "| task | proxy | docs | wall | docs/s | tokens/s | forward share | GFLOP/s | share of fp32 peak | "
             "share of int8 peak | padding | peak RSS MiB | proxy / LLM |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for task, pts in by_task.items():
        llm = tasks.get(task, {}).get("llm") or {}
        for p in pts:
            s32, s8 = shares(p, roof)
            ratio = p["docs_per_s"] / llm["docs_per_s"] if llm.get("docs_per_s") else None
            proxy = tasks.get(task, {}).get("proxy", "?").split(" ")[0]
            lines.append(
                f"| {task} | {proxy} | {p['docs']:,} | {_duration(p['wall_s'])} | {p['docs_per_s']:.1f} | "
                f"{p['tokens_per_s']:,.0f} | {_pct(p['forward_s'] / p['wall_s'] if p['wall_s'] else None, 0)} | "
                f"{p['gflops']:.1f} | {_pct(s32)} | {_pct(s8)} | "
                f"{_pct(p['flops_executed'] / p['flops_useful'] - 1 if p['flops_useful'] else None, 0)} | "
                f"{p['peak_rss_mib']:,.0f} | {_num(ratio, 0)}x |")
    lines += ["", "wall: the mining pass (`mine_documents`), without start-up and loading; tokens/s: prompt tokens "
              "fed to the model (attention-mask tokens; padding not counted); forward share: time inside the model's "
              "forward over the wall time (the rest: tokenizing, decoding, the plan); GFLOP/s: the model's useful "
              "FLOPs (formula below, each sequence at its own length) over the wall time; padding: extra FLOPs the "
              "padded batches execute; peak RSS: `ru_maxrss` of the size's own process (model, corpus prefix, rows).",
              ""]
    proxies = {t: e.get("proxy") for t, e in tasks.items() if t in by_task}
    lines += ["Proxies: " + "; ".join(f"{t}: {p}" for t, p in proxies.items()) + ".", ""]
    llm_rows = [(t, e["llm"]) for t, e in tasks.items() if e.get("llm") and t in by_task]
    if llm_rows:
        lines += ["## The same plan executed by the LLM", "",
                  "| task | docs | calls | LLM s | docs/s | prompt tokens/s | cached calls | proxy docs/s (largest N) "
                  "| proxy / LLM |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for t, llm in llm_rows:
            proxy = by_task[t][-1]["docs_per_s"]
            lines.append(f"| {t} | {llm['docs']} | {llm['calls']} | {llm['llm_seconds']:.1f} | {llm['docs_per_s']:.3f} | "
                         f"{llm['prompt_tokens_per_s']:.0f} | {llm['cached_calls']} | {proxy:.1f} | "
                         f"{_num(proxy / llm['docs_per_s'] if llm['docs_per_s'] else None, 0)}x |")
        lines += ["", f"LLM: `{llm_rows[0][1].get('model', '?')}` (the `llm` resource's defaults), one call per text "
                  "and primitive, on the first documents of the corpus; LLM s is the sum of the calls' original "
                  "latencies (kept in the benchmark's LLM cache, so a cached re-run reports the real cost).", ""]
    if roof:
        lines += ["## This machine's matmul roofline", "",
                  f"{roof.get('threads')} threads, best of {st.get('matmul_repeats')} windows of "
                  f"{st.get('matmul_seconds')} s each, measured {roof.get('measured_at', '?')} "
                  f"(load average {roof.get('loadavg', 0):.1f}).", "",
                  "| shape | fp32 GFLOP/s | int8 GOP/s, torch._int_mm | int8 GOP/s, quantized dynamic Linear |",
                  "|---|---:|---:|---:|"]
        for r in roof.get("fp32", []):
            i8 = {x["method"]: x["gops"] for x in roof.get("int8", []) if x["shape"] == r["shape"]}
            lines.append(f"| {r['shape']} | {r['gflops']:.1f} | {_num(i8.get('torch._int_mm'))} | "
                         f"{_num(i8.get('quantized dynamic Linear'))} |")
        lines += ["", f"Peaks: fp32 {roof['fp32_peak_gflops']:.1f} GFLOP/s, int8 {_num(roof.get('int8_peak_gops'))} "
                  f"GOP/s ({roof.get('int8_peak_method') or 'none'}).", ""]
    lines += _formula_section(results, by_task)
    lines += ["## Reading", ""] + reading(results)
    return "\n".join(lines) + "\n"


def _formula_section(results: dict, by_task: dict[str, list[dict]]) -> list[str]:
    pts = [p for ps in by_task.values() for p in ps]
    if not pts:
        return []
    dims = EncoderDims(**pts[0]["dims"])
    max_len = pts[0].get("max_length", 256)
    mean_len = sum(p["real_tokens"] for p in pts) / max(sum(p["sequences"] for p in pts), 1)
    return ["## FLOPs per token", "",
            f"The proxy: {dims.layers} layers, hidden size h = {dims.hidden}, intermediate size i = {dims.intermediate}, "
            f"c = {dims.num_labels} labels, sequences of up to {max_len} tokens. Forward FLOPs per token of a sequence of "
            "L tokens (a multiply-add = 2 FLOPs; `falconer_assets/bench/roofline.py`):", "",
            "    n * (8*h^2 + 4*h*i + 4*L*h) + 2*h*c", "",
            "(Q, K, V and output projections 8h^2, feed-forward 4hi, attention scores and weighted sum 4Lh, the "
            f"head 2hc; layer norms, softmax, GELU and embeddings left out). At L = {max_len}: "
            f"{flops_per_token(dims, max_len) / 1e6:.2f} MFLOP/token; at the mean prompt length fed here, "
            f"L = {mean_len:.0f}: {flops_per_token(dims, max(1, round(mean_len))) / 1e6:.2f} MFLOP/token. "
            "Each forward batch is counted exactly, each sequence at its own length.", ""]


def reading(results: dict) -> list[str]:
    """Plain-language paragraphs on the numbers: scaling, memory, the roofline share, the LLM ratio, the full
    archive's projected time, and the machine's load during the run."""
    roof = results.get("roofline") or {}
    by_task = _by_task(results)
    tasks = results.get("tasks", {})
    out = []
    if not by_task:
        return ["No measurement yet."]
    for task, pts in by_task.items():
        exp = scaling_exponent(pts)
        first, last = pts[0], pts[-1]
        s32, s8 = shares(last, roof)
        fwd = last["forward_s"] / last["wall_s"] if last["wall_s"] else 0.0
        fwd_share = last["forward_gflops"] / roof["fp32_peak_gflops"] if roof.get("fp32_peak_gflops") else None
        text = (f"**{task}**: {first['docs']:,} to {last['docs']:,} documents at {first['docs_per_s']:.1f} to "
                f"{last['docs_per_s']:.1f} docs/s")
        text += (f"; wall time grows as N^{exp:.2f} (1.00 = linear, the dashed lines in the plot; below 1 when fixed "
                 "costs such as the first batches' warm-up still weigh)" if exp is not None else "")
        text += (f". Peak RSS {first['peak_rss_mib']:,.0f} MiB at {first['docs']:,} documents"
                 + (f", {last['peak_rss_mib']:,.0f} MiB at {last['docs']:,}" if last is not first else "")
                 + f"; {first['rss_before_mib']:,.0f} MiB of it is the interpreter, torch and the model before mining, "
                 "the rest the forward passes' activations and allocator caches plus the documents and rows, which "
                 "mining holds in memory as the `mined` asset does")
        if last["docs"] >= 4 * first["docs"]:
            growth = (last["peak_rss_mib"] - first["peak_rss_mib"]) / (last["docs"] - first["docs"]) * 1000
            text += f" ({growth:+.1f} MiB per 1,000 more documents)"
        text += "."
        slow = 1 - fwd
        text += (f" The model's forward pass is {fwd:.0%} of the mining time"
                 + (f" (tokenizing, decoding and the plan: {slow:.0%})" if slow >= 0.1 else "")
                 + f" and runs at {last['forward_gflops']:.0f} GFLOP/s ({_pct(fwd_share, 0)} of the fp32 matmul peak); "
                 f"over the whole pass mining achieves {last['gflops']:.0f} GFLOP/s, {_pct(s32, 0)} of the fp32 peak "
                 f"and {_pct(s8, 0)} of the int8 one.")
        llm = tasks.get(task, {}).get("llm")
        n_full = results.get("corpus", {}).get("lines", 0)
        if llm and llm.get("docs_per_s"):
            ratio = last["docs_per_s"] / llm["docs_per_s"]
            text += (f" The LLM executes the same plan at {llm['docs_per_s']:.3f} docs/s ({llm['docs']} docs): the "
                     f"proxy is {ratio:,.0f}x faster")
            if n_full:
                text += (f"; the whole corpus ({n_full:,} documents) would take the proxy "
                         f"{_duration(n_full / last['docs_per_s'])} and the LLM {_duration(n_full / llm['docs_per_s'])}")
            text += "."
        elif n_full:
            text += f" The whole corpus ({n_full:,} documents) would take the proxy {_duration(n_full / last['docs_per_s'])}."
        out += [text, ""]
    pts = [p for ps in by_task.values() for p in ps]
    loads = [0.5 * (p["loadavg_start"] + p["loadavg_end"]) for p in pts]
    cores = results.get("machine", {}).get("cores") or 1
    mean_load = sum(loads) / len(loads)
    fwd_all = sum(p["forward_s"] for p in pts) / max(sum(p["wall_s"] for p in pts), 1e-9)
    pad = sum(p["flops_executed"] for p in pts) / max(sum(p["flops_useful"] for p in pts), 1e-9) - 1
    fwd_rate = sum(p["flops_useful"] for p in pts) / max(sum(p["forward_s"] for p in pts), 1e-9) / 1e9
    peak = roof.get("fp32_peak_gflops")
    limits = (f"Where the time goes: {fwd_all:.0%} of all mining time is the model's forward pass"
              + (", so tokenizing, decoding and the plan are not the bottleneck" if fwd_all >= 0.9 else "")
              + f". Inside it the encoder runs at {fwd_rate:.0f} GFLOP/s of useful work"
              + (f", {fwd_rate / peak:.0%} of the best fp32 matmul rate measured here" if peak else "")
              + f", and padded batches execute {pad:.0%} more FLOPs than the prompts need (texts are sorted by "
              "length within each primitive call before batching). The rest of the gap to the peak is what the "
              "microbenchmark does not have: attention, layer norms, GELU and softmax between the GEMMs, and the "
              "encoder's thin matrices (h = 384). Levers: an int8 model (the int8 peak is the ceiling), less padding, "
              "larger forward batches.")
    out += [limits, "",
            (f"Machine load: the 1-minute load average during the measurements was {mean_load:.1f} on {cores} cores"
             + (" (other work was running: the absolute rates are lower bounds, and the matmul peak was measured at "
                "another moment under another load, so the shares are approximate)." if mean_load > 0.75 * cores else ".")),
            ""]
    return out


def plot(results: dict, path: Path) -> None:
    """Log-log mining wall time against documents, one line per task, a linear reference (slope 1 through the
    task's smallest size, dashed) and the LLM's projected time at its measured docs/s (dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_task = _by_task(results)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for k, (task, pts) in enumerate(by_task.items()):
        color = f"C{k}"
        xs = [p["docs"] for p in pts]
        ax.plot(xs, [p["wall_s"] for p in pts], "o-", color=color, label=f"{task} (proxy)")
        x0, y0 = xs[0], pts[0]["wall_s"]
        span = [min(xs), max(xs)]
        ax.plot(span, [y0 * x / x0 for x in span], "--", color=color, alpha=0.5, linewidth=1)
        llm = results.get("tasks", {}).get(task, {}).get("llm")
        if llm and llm.get("docs_per_s"):
            ax.plot(span, [x / llm["docs_per_s"] for x in span], ":", color=color, alpha=0.8,
                    label=f"{task} (LLM, projected)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("documents mined (first N of the corpus)")
    ax.set_ylabel("wall time, s")
    ax.set_title("Mining time vs corpus size (dashed: linear reference)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict, out: Path, quick: bool = False) -> None:
    """Write ``<out>/mining.md`` and ``<out>/mining.png`` from the results."""
    (out / "mining.md").write_text(markdown(results, quick))
    if results.get("points"):
        plot(results, out / "mining.png")
