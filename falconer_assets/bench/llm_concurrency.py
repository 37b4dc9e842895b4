"""``python -m falconer_assets.bench llm [--quick]``: annotation speed vs concurrent LLM requests.

The same label prompts (the annotator's, over documents of the bundled Debian corpus) are sent to the
embedded llama.cpp server, or to any OpenAI-compatible endpoint, with the LLM cache off, once per
setting ``(slots, in flight)``: the server's request slots (llama.cpp ``--parallel``, embedded only)
and the requests :meth:`~falconer_assets.llm.client.ChatLLM.chat_many` keeps in flight. For each
setting: wall seconds, calls/s, completion tokens/s, the speed-up over one request at a time and the
share of answers equal to the one-at-a-time answers (batched decoding on llama.cpp may change a
greedy answer's floating-point path). Server start-up is not timed. Results: ``llm.json``, ``llm.md``
and ``llm.png`` in ``--out`` (``docs/bench``; ``data/bench_quick`` for ``--quick``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from falconer_assets.llm.client import ChatLLM
from falconer_assets.llm.prompts import label_messages, parse_label

QUESTION = "Is this package a game?"
"""The label sub-task asked of every document (the bundled debian_game_genres task's)."""

CORPUS = Path("data/corpora/debian_packages/debian_packages.jsonl")


@dataclass(frozen=True)
class Setting:
    """One measured configuration: ``slots`` (server request slots; ignored remotely) and ``in_flight``
    (requests kept in flight by the client)."""

    slots: int
    in_flight: int


FULL = (Setting(1, 1), Setting(2, 2), Setting(4, 4))
QUICK = (Setting(1, 1), Setting(2, 2))


def documents(n: int, path: Path = CORPUS) -> list[str]:
    """The first ``n`` texts of the bundled corpus (a JSONL file of ``{"id", "text"}`` records).

    Raises:
        FileNotFoundError: the corpus is missing. ValueError: it holds fewer than ``n`` texts.
    """
    texts = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if isinstance(rec, dict) and isinstance(rec.get("text"), str) and rec["text"].strip():
                texts.append(rec["text"])
            if len(texts) == n:
                return texts
    raise ValueError(f"{path} holds {len(texts)} texts, fewer than {n}")


def measure(texts: Sequence[str], setting: Setting, model: str, base_url: str | None,
            log: Callable[[str], None] = print) -> dict:
    """Send one label prompt per text with ``setting``; returns the measurement (no cache).

    Returns:
        ``{"slots", "in_flight", "calls", "seconds", "calls_per_s", "completion_tokens",
        "tokens_per_s", "answers"}`` (``answers``: the parsed Yes/No/None per text, in order).
    """
    llm = ChatLLM(model=model, base_url=base_url, cache_path=None, n_parallel=setting.slots,
                  max_concurrency=setting.in_flight, n_threads=None)
    try:
        llm.chat([{"role": "user", "content": "Say OK."}], max_tokens=2)  # start the server, untimed
        t0 = time.perf_counter()
        results = llm.chat_many([label_messages(t, QUESTION) for t in texts])
        seconds = time.perf_counter() - t0
    finally:
        llm.close()
    tokens = sum(r.completion_tokens for r in results)
    out = {**asdict(setting), "calls": len(results), "seconds": round(seconds, 3),
           "calls_per_s": round(len(results) / seconds, 4), "completion_tokens": tokens,
           "tokens_per_s": round(tokens / seconds, 3), "answers": [parse_label(r.text) for r in results]}
    log(f"slots {setting.slots}, in flight {setting.in_flight}: {len(results)} calls in {seconds:.1f} s "
        f"({out['calls_per_s']:.2f} calls/s)")
    return out


def run(settings: Sequence[Setting], n_docs: int, out: Path, model: str = "qwen2.5-coder-1.5b",
        base_url: str | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Measure every setting on the same ``n_docs`` documents, in order, and write the report.

    The first setting is the reference (speed-up 1.0, agreement 1.0); put one request at a time first.

    Returns:
        One measurement per setting (see :func:`measure`) plus ``speedup`` and ``agreement``.
    """
    texts = documents(n_docs)
    rows = []
    for i, s in enumerate(settings):
        log(f"[{i + 1}/{len(settings)}] {n_docs} label calls, slots {s.slots}, in flight {s.in_flight}")
        rows.append(measure(texts, s, model, base_url, log))
    ref = rows[0]
    for r in rows:
        r["speedup"] = round(r["calls_per_s"] / ref["calls_per_s"], 3)
        r["agreement"] = round(sum(a == b for a, b in zip(r["answers"], ref["answers"])) / len(texts), 4)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": model, "base_url": base_url, "docs": n_docs, "question": QUESTION,
            "measured": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    (out / "llm.json").write_text(json.dumps(meta, indent=1))
    (out / "llm.md").write_text(markdown(meta))
    plot(rows, out / "llm.png")
    return rows


def markdown(meta: dict) -> str:
    """The report: one table row per setting."""
    where = meta["base_url"] or "embedded llama.cpp server"
    lines = [f"# Concurrent LLM calls\n",
             f"Command: `python -m falconer_assets.bench llm`. {meta['docs']} label prompts "
             f"(\"{meta['question']}\") over the bundled Debian corpus, {meta['model']} on {where}, "
             f"no cache; measured {meta['measured']}.\n", "![calls/s](llm.png)\n",
             "| server slots | requests in flight | calls | seconds | calls/s | completion tokens/s | speed-up | "
             "answers equal to one-at-a-time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in meta["rows"]:
        lines.append(f"| {r['slots']} | {r['in_flight']} | {r['calls']} | {r['seconds']:.1f} | {r['calls_per_s']:.2f} | "
                     f"{r['tokens_per_s']:.2f} | {r['speedup']:.2f}x | {r['agreement']:.0%} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: Path) -> Path:
    """Calls/s per setting, a bar chart (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = [f"{r['slots']} slot(s)\n{r['in_flight']} in flight" for r in rows]
    ax.bar(labels, [r["calls_per_s"] for r in rows], color="#4C72B0")
    for i, r in enumerate(rows):
        ax.text(i, r["calls_per_s"], f"{r['speedup']:.2f}x", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("label calls / s")
    ax.set_title("Annotation throughput vs concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
