"""``python -m falconer_assets.bench planning``: the planner scored by execution (paper Table 1's categories).

Every case of :mod:`falconer_assets.bench.planning_cases` (42 instructions: Basic, Query-based,
Multi-entity, multi-step) is planned by the LLM planner
(:func:`~falconer_assets.plan.planner.plan_with_retries`: up to 3 attempts, the error and the dry run fed
back, retries sampled at :data:`~falconer_assets.plan.planner.PLANNER_RETRY_TEMPERATURE`), with or without
the in-context examples, and the accepted plan is run on the case's synthetic corpus with oracle
primitives in the limited plan worker (:mod:`falconer_assets.bench.planning_score`).

Per case and setting (model, examples) one row: valid plan (accepted within the attempts), exact match
and field F1 of the output table, attempts used, prompt and completion tokens, LLM seconds (of the
original calls, also when a re-run reads them from the LLM cache), the questions asked and those the
oracle did not understand. Rows accumulate in ``planning.json`` (a re-run skips the rows it has, for the
same planner version: a hash of the prompts and retry settings), and ``planning.md`` / ``planning.png``
are rebuilt from all of them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from falconer_assets.bench.planning_cases import CASES, CATEGORIES, QUICK_CASES, Case, case_by_id
from falconer_assets.bench.planning_score import score_plan
from falconer_assets.plan.planner import (
    PLANNER_MAX_TOKENS,
    PLANNER_RETRY_TEMPERATURE,
    PLANNER_SYSTEM_PROMPT,
    PLANNER_SYSTEM_PROMPT_NO_EXAMPLES,
    extract_code,
    plan_with_retries,
)
from falconer_assets.plan.sandbox import PlanValidationError

__all__ = ["EMBEDDED", "PAPER_TABLE1", "MeteredChat", "planner_version", "run_case", "run", "rescore", "summarize",
           "markdown", "plot"]

#: ``--model`` short names of the embedded models.
EMBEDDED = {"0.5b": "qwen2.5-coder-0.5b", "1.5b": "qwen2.5-coder-1.5b"}

MAX_ATTEMPTS = 3
"""LLM calls allowed per plan (as the ``plan`` asset)."""

#: The paper's Table 1 (planning accuracy; their models, their tasks, not this benchmark): method ->
#: (Basic, Query-based, Multi-entity, Misc., Misc. with ICL).
PAPER_TABLE1 = {
    "Falconer w/ GPT-4.1": (0.96, 1.00, 1.00, 0.21, 0.96),
    "Falconer w/ GPT-4o": (0.63, 0.78, 1.00, 0.19, 0.84),
    "Falconer w/ Claude 3.7 Sonnet": (0.78, 0.80, 0.98, 0.19, 0.92),
    "Falconer w/ GPT-4o-mini": (0.50, 0.19, 0.30, 0.00, 0.42),
}

#: The planner's source repairs measured (part of :func:`planner_version`).
_REPAIRS = ("rename_throwaway_names",)

_CATEGORY_NAMES = {"basic": "Basic", "query": "Query-based", "multi_entity": "Multi-entity",
                   "multi_step": "Multi-step (Misc.)"}


def planner_version() -> str:
    """12 hex characters naming the planner setup measured (prompts, attempts, retry temperature,
    token limit): rows of another version are kept in the json but not reported."""
    key = json.dumps([PLANNER_SYSTEM_PROMPT, PLANNER_SYSTEM_PROMPT_NO_EXAMPLES, MAX_ATTEMPTS,
                      PLANNER_RETRY_TEMPERATURE, PLANNER_MAX_TOKENS, _REPAIRS])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class MeteredChat:
    """A planner ``chat`` callable over a ``ChatLLM`` that adds up tokens and LLM seconds.

    ``__call__(messages, **params) -> str`` sends ``max_tokens=PLANNER_MAX_TOKENS`` and ``params``
    (``temperature``, ``seed`` of a retry) to ``llm.chat``. Counters since :meth:`reset`:
    ``prompt_tokens``, ``completion_tokens``, ``seconds`` (latency of the original calls, seconds),
    ``calls``, ``cached``.
    """

    def __init__(self, llm) -> None:
        self.llm = llm
        self.reset()

    def reset(self) -> None:
        """Zero the counters."""
        self.prompt_tokens = self.completion_tokens = self.calls = self.cached = 0
        self.seconds = 0.0

    def __call__(self, messages: list[dict], **params) -> str:
        r = self.llm.chat(messages, max_tokens=PLANNER_MAX_TOKENS, **params)
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.seconds += r.latency_s
        self.calls += 1
        self.cached += int(r.cached)
        return r.text


def run_case(case: Case, chat: Callable[..., str], *, examples: bool, model: str,
             max_attempts: int = MAX_ATTEMPTS, isolated: bool = True) -> dict:
    """Plan ``case`` with ``chat`` and score the accepted plan by execution; one result row.

    Args:
        case: the benchmark case.
        chat: the planner's chat callable (a :class:`MeteredChat` adds tokens and seconds to the row).
        examples: give the planner its in-context examples.
        model: the model's name, stored in the row.
        max_attempts: LLM calls allowed.
        isolated: run the plan in the limited worker process (False: in this process, for tests).

    Returns:
        ``{"model", "examples", "case", "category", "version", "valid", "attempts", "first_valid"
        (accepted at attempt 1), "exact", "f1", "precision", "recall", "prompt_tokens",
        "completion_tokens", "seconds", "wall_seconds", "error", "unknown_questions", "questions",
        "plan"}``; ``valid`` False means no plan was accepted (exact and F1 are then 0).

    Raises:
        Whatever ``chat`` raises (network, model start-up); PlanWorkerError when the worker cannot start.
    """
    meter = chat if isinstance(chat, MeteredChat) else None
    if meter:
        meter.reset()
    t0 = time.perf_counter()
    row = {"model": model, "examples": examples, "case": case.id, "category": case.category,
           "version": planner_version()}
    try:
        plan, attempts = plan_with_retries(chat, case.instruction, list(case.fields), max_attempts=max_attempts,
                                           examples=examples)
        source = plan.source
    except PlanValidationError as exc:
        attempts = getattr(exc, "attempts", [])
        source = None
        last = attempts[-1].reply if attempts else ""
        try:
            row["rejected_plan"] = extract_code(last)[:3000]
        except PlanValidationError:
            row["rejected_plan"] = last[:3000]
        row["error"] = str(exc)[-1500:]
    row.update(valid=source is not None, attempts=len(attempts),
               first_valid=bool(attempts) and attempts[0].error is None)
    if source is not None:
        score = score_plan(case, source, isolated=isolated)
        row.update(exact=score.exact, f1=score.f1, precision=score.precision, recall=score.recall,
                   error=score.error, unknown_questions=score.unknown_questions, questions=score.questions,
                   plan=source)
    else:
        row.update(exact=0.0, f1=0.0, precision=0.0, recall=0.0, unknown_questions=[], questions=[], plan=None)
    row.update(prompt_tokens=meter.prompt_tokens if meter else None,
               completion_tokens=meter.completion_tokens if meter else None,
               seconds=round(meter.seconds, 3) if meter else None,
               wall_seconds=round(time.perf_counter() - t0, 3))
    return row


@dataclass(frozen=True)
class ModelSpec:
    """A planner model: an embedded one (``base_url`` None) or a remote OpenAI-compatible one."""

    name: str
    base_url: str | None = None
    api_key: str = "sk-no-key"


def _load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["rows"]


def _save(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"rows": rows}, indent=1), encoding="utf-8")
    tmp.replace(path)


def run(models: Sequence[ModelSpec], cases: Sequence[str], examples_modes: Sequence[bool], out_json: Path, *,
        make_chat: Callable[[ModelSpec], Callable[..., str]] | None = None, log: Callable[[str], None] = print,
        budget_s: float | None = None, isolated: bool = True, threads: int | None = None) -> list[dict]:
    """Run every missing ``(model, examples, case)`` row, appending each to ``out_json`` as it finishes.

    Args:
        models: the planner models.
        cases: case ids (see :data:`~falconer_assets.bench.planning_cases.CASES`).
        examples_modes: ``(True,)``, ``(False,)`` or both.
        out_json: the results file (``{"rows": [...]}``), read first and rewritten after each row.
        make_chat: ``spec -> chat callable`` (tests: a scripted planner); default: a :class:`MeteredChat`
            over ``ChatLLM`` (embedded models on this machine's cores; LLM cache in
            ``data/bench_planning/llm_cache.duckdb``).
        log: progress lines.
        budget_s: stop starting new rows after this many wall seconds (the rest waits for a re-run).
        isolated: run plans in the limited worker process.
        threads: CPU threads of an embedded model's server (None: all cores).

    Returns:
        All rows of ``out_json`` after the run (every version).

    Raises:
        KeyError: an unknown case id. Errors of the LLM client propagate (rows done so far are saved).
    """
    wanted = [case_by_id(c) for c in cases]
    rank: dict[str, int] = {}
    for c in wanted:  # round robin over the categories: a run cut short still covers all four
        rank[c.id] = sum(1 for d in wanted[:wanted.index(c)] if d.category == c.category)
    wanted.sort(key=lambda c: (rank[c.id], CATEGORIES.index(c.category)))
    rows = _load(out_json)
    version = planner_version()
    done = {(r["model"], r["examples"], r["case"]) for r in rows if r.get("version") == version}
    t0 = time.perf_counter()
    for spec in models:
        todo = [(ex, c) for ex in examples_modes for c in wanted if (spec.name, ex, c.id) not in done]
        if not todo:
            continue
        llm = None
        if make_chat is None:
            from falconer_assets.llm.client import ChatLLM

            Path("data/bench_planning").mkdir(parents=True, exist_ok=True)
            llm = ChatLLM(model=spec.name, base_url=spec.base_url, api_key=spec.api_key, max_tokens=PLANNER_MAX_TOKENS,
                          cache_path="data/bench_planning/llm_cache.duckdb", n_ctx=8192,
                          n_threads=threads)
            chat = MeteredChat(llm)
        else:
            chat = make_chat(spec)
        try:
            for ex, case in todo:
                if budget_s is not None and time.perf_counter() - t0 > budget_s:
                    log(f"time budget of {budget_s:.0f} s spent: stopping, re-run to continue")
                    return rows
                row = run_case(case, chat, examples=ex, model=spec.name, isolated=isolated)
                rows.append(row)
                _save(out_json, rows)
                log(f"{spec.name} examples={ex} {case.id} ({case.category}): valid={row['valid']} "
                    f"attempts={row['attempts']} exact={row['exact']:.0f} f1={row['f1']:.2f} "
                    f"{row['seconds'] if row['seconds'] is not None else '-'} s"
                    + (f" unknown={row['unknown_questions']}" if row["unknown_questions"] else "")
                    + (f" error={row['error'][:160]!r}" if row.get("error") else ""))
        finally:
            if llm is not None:
                llm.close()
    return rows


def rescore(rows: list[dict], out_json: Path | None = None, *, isolated: bool = True) -> list[dict]:
    """Score every row's accepted plan again with the current oracle and cases (no LLM call), in place;
    with ``out_json``, save the rows there. A fix of the oracle's question matching thus reaches every
    plan already measured. Returns ``rows``."""
    for r in rows:
        if r.get("plan") is None:
            continue
        score = score_plan(case_by_id(r["case"]), r["plan"], isolated=isolated)
        r.update(exact=score.exact, f1=score.f1, precision=score.precision, recall=score.recall, error=score.error,
                 unknown_questions=score.unknown_questions, questions=score.questions)
    if out_json is not None:
        _save(out_json, rows)
    return rows


def summarize(rows: Sequence[dict], version: str | None = None) -> list[dict]:
    """Per ``(model, examples, category)`` (and ``"all"``): ``n``, ``valid`` (rate), ``first_valid`` (rate),
    ``exact`` (execution accuracy), ``f1`` (mean), ``attempts``, ``tokens`` (prompt + completion) and
    ``seconds`` (means per case), over the rows of ``version`` (default: the current planner's)."""
    version = version or planner_version()
    rows = [r for r in rows if r.get("version") == version]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        for cat in (r["category"], "all"):
            groups.setdefault((r["model"], r["examples"], cat), []).append(r)
    order = {c: i for i, c in enumerate((*CATEGORIES, "all"))}
    out = []
    for (model, ex, cat), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1], order[kv[0][2]])):
        n = len(rs)
        mean = lambda k: sum((r.get(k) or 0) for r in rs) / n  # noqa: E731
        low, high = _bootstrap_interval([float(r.get("exact") or 0) for r in rs])
        out.append({"model": model, "examples": ex, "category": cat, "n": n, "valid": mean("valid"),
                    "exact_low": low, "exact_high": high,
                    "first_valid": mean("first_valid"), "exact": mean("exact"), "f1": mean("f1"),
                    "attempts": mean("attempts"),
                    "tokens": sum((r.get("prompt_tokens") or 0) + (r.get("completion_tokens") or 0) for r in rs) / n,
                    "seconds": mean("seconds"),
                    "unknown": sum(len(r.get("unknown_questions") or ()) > 0 for r in rs)})
    return out


def _bootstrap_interval(values: Sequence[float], n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values`` (resampling cases; seeded)."""
    import random

    if not values:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    k = len(values)
    means = sorted(sum(rng.choice(values) for _ in range(k)) / k for _ in range(n_boot))
    return means[int(0.025 * n_boot)], means[int(0.975 * n_boot) - 1]


def markdown(rows: Sequence[dict], header: str = "") -> str:
    """The results page: our table (n per cell), the paper's Table 1 (theirs), and the misses per case."""
    summary = summarize(rows)
    lines = [header,
             "## This benchmark (our planner, our synthetic corpus, oracle primitives)\n",
             "Execution accuracy = share of cases whose output table equals the expected one exactly, with its 95% "
             "bootstrap interval over the cases (1,000 resamples); "
             "F1 = mean field-level F1; valid = a plan accepted within 3 attempts (first: at attempt 1); "
             "tokens and seconds are per case, all attempts (seconds: the LLM calls on this machine's CPU "
             "cores, shared with other work while measured); n = cases measured in the cell; unknown = "
             "cases where the oracle met a question it could not map (scored as answered False / no span).\n",
             "| model | examples | category | n | valid | first valid | exec. accuracy | F1 | attempts | tokens | "
             "seconds | unknown |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        cat = "**all**" if s["category"] == "all" else _CATEGORY_NAMES[s["category"]]
        lines.append(f"| {s['model']} | {'yes' if s['examples'] else 'no'} | {cat} | {s['n']} | {s['valid']:.2f} | "
                     f"{s['first_valid']:.2f} | {s['exact']:.2f} [{s['exact_low']:.2f}, {s['exact_high']:.2f}] | {s['f1']:.2f} | {s['attempts']:.2f} | "
                     f"{s['tokens']:.0f} | {s['seconds']:.1f} | {s['unknown']} |")
    lines += ["", "## The paper's Table 1 (THEIR planners, THEIR tasks; quoted for scale, not comparable)\n",
              "Falconer (arXiv 2510.01346v1) Table 1, planning accuracy; \"Misc.\" are their multi-step and "
              "stress-test tasks, without and with in-context learning (ICL). Closed models; no task list or "
              "scoring code published with the table.\n",
              "| method (theirs) | Basic | Query-based | Multi-entity | Misc. | Misc. w/ ICL |",
              "|---|---:|---:|---:|---:|---:|"]
    for method, vals in PAPER_TABLE1.items():
        lines.append(f"| {method} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    version = planner_version()
    misses = [r for r in rows if r.get("version") == version and not r["exact"]]
    if misses:
        lines += ["", "## Cases not solved\n", "| model | examples | case | category | why |", "|---|---|---|---|---|"]
        for r in sorted(misses, key=lambda r: (r["model"], not r["examples"], r["case"])):
            if not r["valid"]:
                tries = [ln for ln in (r.get("error") or "").splitlines() if ln.startswith("attempt ")] or [""]
                why = f"no valid plan; last {tries[-1][:150]}"
            elif r.get("error"):
                why = "plan failed on the corpus: " + r["error"][:140]
            else:
                why = f"wrong table (F1 {r['f1']:.2f})" + (
                    f"; oracle did not understand {r['unknown_questions']}" if r["unknown_questions"] else "")
            lines.append(f"| {r['model']} | {'yes' if r['examples'] else 'no'} | {r['case']} | {r['category']} | "
                         f"{why.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: Path) -> Path:
    """Execution accuracy per category, one bar group per (model, examples) (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = [s for s in summarize(rows) if s["category"] != "all"]
    settings = sorted({(s["model"], s["examples"]) for s in summary}, key=lambda t: (t[0], not t[1]))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(1, len(settings))
    for k, (model, ex) in enumerate(settings):
        vals, ns = [], []
        for cat in CATEGORIES:
            hit = [s for s in summary if s["model"] == model and s["examples"] == ex and s["category"] == cat]
            vals.append(hit[0]["exact"] if hit else 0.0)
            ns.append(hit[0]["n"] if hit else 0)
        xs = [i + (k - (len(settings) - 1) / 2) * width for i in range(len(CATEGORIES))]
        ax.bar(xs, vals, width, label=f"{model.replace('qwen2.5-coder-', 'Qwen2.5-Coder ')}"
                                      f"{'' if ex else ' (no examples)'}")
        for x, v, n in zip(xs, vals, ns):
            if n:
                ax.text(x, v + 0.01, f"n={n}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(CATEGORIES)), [_CATEGORY_NAMES[c] for c in CATEGORIES])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("execution accuracy (exact table)")
    ax.set_title("Planning benchmark: plans scored by execution")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def default_cases(quick: bool) -> tuple[str, ...]:
    """The case ids of a run: :data:`QUICK_CASES` with ``quick``, else all :data:`CASES`."""
    return tuple(QUICK_CASES) if quick else tuple(c.id for c in CASES)
