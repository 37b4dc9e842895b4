"""End-to-end gold benchmark: whole Falconer runs scored against real ground truth.

For every task of :data:`~falconer_assets.bench.e2e_gold.GOLD_TASKS` (an instruction whose answer a
public corpus carries), one run does what the assets do, with the same stage functions:

1. **plan** the instruction with the LLM (:func:`~falconer_assets.plan.planner.plan_with_retries`);
2. **sample** the corpus (:func:`~falconer_assets.generator.sampling.sample_with_split`) and set aside
   ``test_docs`` other documents as the test set (never annotated, never in the Appendix B pool);
3. **annotate** every sub-task of the plan on the sample, plus the Appendix B picks
   (:func:`~falconer_assets.generator.annotate.annotate_sub_tasks`);
4. **train** the proxy on the train split (:meth:`NTEProxy.train`);
5. **calibrate** the cascade on the held-out split (:mod:`falconer_assets.cascade`);
6. **run the plan** on the test documents three ways: the LLM alone, the proxy alone, the cascade.

Scores (:func:`score_task`) compare each system's plan output with gold on the same test documents,
with document-level 95% bootstrap intervals; costs are the LLM's original call latencies (kept in the
LLM cache, so a cached re-run reports the real cost), training and proxy wall time. The raw per-document
outputs of a task go to ``<work>/<task>.raw.json`` (a re-run reuses them unless forced), the scored
summary to ``<out>/e2e.json``. Paper section 5 reports the same comparison (proxy vs LLM baselines, cost).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from falconer_assets.bench.e2e_gold import (
    GOLD_TASKS,
    GoldDoc,
    GoldTask,
    corpus_of,
    predicted_positive,
    predicted_spans,
    predicted_values,
    result_from_json,
    result_json,
)
from falconer_assets.proxy.training import FINE_TUNE_RECIPE, TrainConfig

Log = Callable[[str], None]

REFERENCE_PLANS = {  # reviewed plans, as a user keeps them in data/tasks/<task>.plan.py
    "debian_games": '''def plan(texts):
    games = get_label(texts, "Is this package a game?")
    return [{"game": True} if g else None for g in games]
''',
    "wnut16_people": '''def plan(texts):
    people = get_span(texts, "What are the names of people mentioned?")
    return [{"person": p} for p in people]
''',
    "spam": '''def plan(texts):
    spam = get_label(texts, "Is this email spam?")
    return [{"spam": True} if s else None for s in spam]
''',
    "conll_organizations": '''def plan(texts):
    orgs = get_span(texts, "What are the organizations mentioned?")
    return [{"organization": o} for o in orgs]
''',
    "debian_library_language": '''def plan(texts):
    libs = get_label(texts, "Is this package a software library?")
    keep = [t for t, l in zip(texts, libs) if l]
    langs = get_span(keep, "Which programming language is this library for?")
    out, j = [], 0
    for l in libs:
        if l:
            out.append({"language": langs[j]})
            j += 1
        else:
            out.append(None)
    return out
''',
}
"""The reviewed plan of each task (see :func:`_plan`); the run records the planner's own plan beside it."""


@dataclass(frozen=True)
class E2ESettings:
    """Sizes and models of a benchmark run.

    Attributes:
        sample_fraction, min_sample, max_sample, heldout_fraction: the annotated corpus sample
            (:func:`~falconer_assets.generator.sampling.sample_size`) and its held-out share (the
            cascade's calibration set and eval's slice).
        test_docs: test documents per task (not annotated, not in the Appendix B pool).
        llm_docs: test documents the LLM-alone run answers (a seeded subset; ``None`` = all).
        label_extra_ratio: Appendix B extra docs per label sub-task, times the train docs.
        max_docs: cap on each task's corpus (``None``: the task's own cap).
        llm_model: the embedded LLM (or a remote model name with ``base_url``).
        base_url: an OpenAI-compatible endpoint, ``None`` for the embedded model.
        base_model: the proxy's base (``metamodel``, ``minilm``, ``mpnet`` or a path).
        train: the fine-tuning recipe.
        repetitions: seeded calibration repetitions for the guarantee table.
        budgets: LLM shares of the F1-vs-share curve.
        use_planner: execute the planner's plan instead of the reviewed one (:func:`_plan`).
        seed: the sample, test set and subset seed.
    """

    sample_fraction: float = 0.1
    min_sample: int = 60
    max_sample: int = 200
    heldout_fraction: float = 0.4
    test_docs: int = 200
    llm_docs: int | None = None
    label_extra_ratio: float = 1.0
    max_docs: int | None = None
    llm_model: str = "qwen2.5-coder-1.5b"
    base_url: str | None = None
    base_model: str = "metamodel"
    train: TrainConfig = FINE_TUNE_RECIPE
    repetitions: int = 20
    budgets: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
    use_planner: bool = False
    seed: int = 0

    def as_dict(self) -> dict:
        """JSON-safe settings (the recipe as a dict)."""
        d = asdict(self)
        d["train"] = self.train.model_dump()
        return d


FULL = E2ESettings()
QUICK = E2ESettings(sample_fraction=0.3, min_sample=30, max_sample=30, heldout_fraction=0.34, test_docs=30,
                    label_extra_ratio=0.5, max_docs=90, repetitions=20, budgets=(0.0, 0.2, 1.0),
                    train=FINE_TUNE_RECIPE.model_copy(update={"epochs": 4, "patience": 2}))
"""``--quick``: one task on 90 documents, 30 annotated, 30 test documents (a few minutes)."""


# --------------------------------------------------------------------------------------------- run


def _docs_mapping(docs: Sequence[GoldDoc]):
    from falconer_assets.inputs.corpus import Document

    return {d.id: Document(d.id, d.text) for d in docs}


def split_corpus(docs: Sequence[GoldDoc], settings: E2ESettings) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """``(sampled (id, split) pairs, test ids, llm ids)``: the annotated sample, then a seeded test set from
    the rest, then the LLM-alone subset of the test set (all of it when ``llm_docs`` is ``None``)."""
    from falconer_assets.generator.sampling import sample_size, sample_with_split

    ids = [d.id for d in docs]
    n = sample_size(len(ids), settings.sample_fraction, settings.min_sample, settings.max_sample)
    sampled = sample_with_split(ids, n, settings.heldout_fraction, settings.seed)
    taken = {i for i, _ in sampled}
    rest = sorted(i for i in ids if i not in taken)
    rng = random.Random(f"e2e/test/{settings.seed}")
    test = sorted(rng.sample(rest, min(settings.test_docs, len(rest))))
    llm = test if settings.llm_docs is None or settings.llm_docs >= len(test) else sorted(rng.sample(test, settings.llm_docs))
    return sampled, test, llm


def _plan(task: GoldTask, chat, log: Log, use_planner: bool) -> tuple[object, dict]:
    """The plan the run executes, and what the planner did.

    The planner is always asked (its plan, attempts and cost are recorded). By default the run then
    executes the task's reviewed plan (:data:`REFERENCE_PLANS`), as a user does who reads the plan and
    keeps an edited ``<task>.plan.py``: this benchmark measures annotation, proxy and cascade given a
    correct plan; plan quality has its own benchmark. ``use_planner`` executes the planner's plan
    instead (the reviewed one when the planner fails)."""
    from falconer_assets.plan.planner import PLANNER_MAX_TOKENS, plan_with_retries
    from falconer_assets.plan.sandbox import PlanValidationError, validate_plan

    t0 = time.perf_counter()
    calls = []

    def planner_chat(messages):
        res = chat(messages, max_tokens=PLANNER_MAX_TOKENS)
        calls.append(res)
        return res.text

    reviewed = validate_plan(REFERENCE_PLANS[task.name])
    try:
        planned, attempts = plan_with_retries(planner_chat, task.instruction, list(task.fields))
        planner_source, errors = planned.source, [a.error for a in attempts if a.error]
    except PlanValidationError as exc:
        planned, planner_source, errors = None, None, [str(exc)]
    plan = planned if (use_planner and planned is not None) else reviewed
    source = "planner" if plan is planned else "reviewed"
    info = {"plan_source": source, "plan": plan.source, "planner_plan": planner_source, "attempts": len(calls),
            "errors": errors, "llm_seconds": sum(c.latency_s for c in calls), "seconds": time.perf_counter() - t0,
            "tokens": sum(c.prompt_tokens + c.completion_tokens for c in calls),
            "sub_tasks": [[c.kind, c.instruction] for c in plan.calls]}
    log(f"{task.name}: the planner wrote ({len(calls)} call(s)):\n{planner_source}\nexecuting the {source} plan:\n{plan.source}")
    return plan, info


class _Progress:
    """Wraps a primitive pair to log done/total, rate and ETA of LLM calls."""

    def __init__(self, prims, total: int, what: str, log: Log):
        self.prims, self.total, self.what, self.log = prims, max(total, 1), what, log
        self.t0, self.done, self.next_report = time.perf_counter(), 0, 25

    def _tick(self, n: int) -> None:
        self.done += n
        if self.done >= self.next_report:
            self.next_report = self.done + 25
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            self.log(f"{self.what}: {self.done} answers ({rate:.2f}/s, ~{max(self.total - self.done, 0) / rate:.0f} s left)")

    def get_label(self, texts, instruction):
        out = []
        for t in texts:
            out += self.prims.get_label([t], instruction)
            self._tick(1)
        return out

    def get_span(self, texts, instruction):
        out = []
        for t in texts:
            out += self.prims.get_span([t], instruction)
            self._tick(1)
        return out


def run_task(task: GoldTask, settings: E2ESettings, llm, work: Path, log: Log = print,
             stages: str = "all") -> dict:
    """One whole Falconer run of ``task`` plus the LLM-alone baseline; returns the raw record.

    Args:
        task: the gold task.
        settings: sizes and models.
        llm: a :class:`~falconer_assets.llm.client.ChatLLM` (its cache makes re-runs cheap).
        work: folder for checkpoints and raw outputs.
        stages: ``"llm"`` stops after the LLM work (plan, annotations, LLM-alone run: warms the cache);
            ``"all"`` runs everything.

    Returns:
        The raw record (also written to ``<work>/<task>.raw.json``): plan, sample sizes, costs,
        per-document outputs of each system on the test documents, the cascade's bands.

    Raises:
        FileNotFoundError: the metamodel base is not built (the message says how).
    """
    from falconer_assets.generator.annotate import LabelHeuristic, annotate_sub_tasks
    from falconer_assets.llm.executor import LLMPrimitives
    from falconer_assets.plan.sandbox import run_plan

    t_task = time.perf_counter()
    docs = corpus_of(task, settings.seed, settings.max_docs)
    by_id = {d.id: d for d in docs}
    sampled, test_ids, llm_ids = split_corpus(docs, settings)
    log(f"{task.name}: {len(docs)} docs, {len(sampled)} sampled, {len(test_ids)} test, LLM-alone on {len(llm_ids)}")
    plan, plan_info = _plan(task, llm.chat, log, settings.use_planner)

    not_test = _docs_mapping([d for d in docs if d.id not in set(test_ids)])
    proxy0 = {}

    def load_scorer():
        from falconer_assets.metamodel.base_model import resolve_base_model
        from falconer_assets.proxy.model import NTEProxy

        proxy0["m"] = NTEProxy.load(resolve_base_model(settings.base_model), seed=settings.train.seed)
        return lambda texts, q: proxy0["m"].get_label_scores(texts, q)

    t0 = time.perf_counter()
    annotated = annotate_sub_tasks(
        corpus=task.name, docs=not_test, sampled=sampled, sub_tasks=[(c.kind, c.instruction) for c in plan.calls],
        heuristic=LabelHeuristic(label_extra_ratio=settings.label_extra_ratio, seed=settings.seed),
        llm_identity=[settings.base_url, llm.identity, llm.temperature, llm.max_tokens],
        scorer_name=settings.base_model, cached=lambda _k: [], save=lambda _k, _rows: None, chat=llm.chat,
        load_scorer=load_scorer, log=lambda m: log(f"{task.name}: {m}"))
    annotation = {"calls": annotated.llm_calls, "tokens": annotated.llm_tokens, "llm_seconds": annotated.llm_seconds,
                  "wall_seconds": time.perf_counter() - t0, "rows": len(annotated.rows),
                  "per_sub_task": [st.summary() for st in annotated.sub_tasks]}
    log(f"{task.name}: {annotated.llm_calls} annotations ({annotated.llm_cache_hits} cached), "
        f"{annotated.llm_seconds:.0f} LLM s")

    llm_prims = LLMPrimitives(llm.chat)
    llm_texts = [by_id[i].text for i in llm_ids]
    n_calls = len(llm_texts) * max(1, len(plan.calls))
    t0 = time.perf_counter()
    prog = _Progress(llm_prims, n_calls, f"{task.name}: LLM-alone", log)
    llm_out = run_plan(plan, llm_texts, prog.get_label, prog.get_span)
    llm_run = {"calls": len(llm_prims.annotations), "tokens": llm_prims.tokens, "llm_seconds": llm_prims.llm_seconds,
               "wall_seconds": time.perf_counter() - t0,
               "cache_hits": sum(a.cached for a in llm_prims.annotations)}
    oracle = [{"kind": a.kind, "instruction": a.instruction, "text_id": _text_id(a.text, by_id, llm_ids),
               "label": a.label, "spans": [[s.start, s.end, s.text] for s in a.spans]} for a in llm_prims.annotations]
    raw = {"task": task.name, "instruction": task.instruction, "settings": settings.as_dict(),
           "corpus_docs": len(docs), "sample": {"docs": len(sampled), "train": sum(s == "train" for _, s in sampled),
                                                "heldout": sum(s == "heldout" for _, s in sampled)},
           "test_ids": test_ids, "llm_ids": llm_ids, "plan": plan_info, "annotation": annotation, "llm_run": llm_run,
           "outputs": {"llm": {i: result_json(r) for i, r in zip(llm_ids, llm_out)}}, "llm_answers": oracle}
    if stages == "llm":
        raw["complete"] = False
        return raw

    proxy, train_info = _train(task, annotated.rows, not_test, settings, work, log)
    test_texts = [by_id[i].text for i in test_ids]
    t0 = time.perf_counter()
    proxy_out = run_plan(plan, test_texts, proxy.get_label, proxy.get_span)
    proxy_seconds = time.perf_counter() - t0
    raw["train"] = train_info
    raw["proxy_run"] = {"wall_seconds": proxy_seconds, "docs": len(test_ids)}
    raw["outputs"]["proxy"] = {i: result_json(r) for i, r in zip(test_ids, proxy_out)}
    raw.update(_cascade(task, plan, proxy, annotated.rows, not_test, by_id, test_ids, llm_ids, llm, settings, log))
    bands = {(b["kind"], b["instruction"]): _band(b["band"]) for b in raw["bands"]}
    raw["repetitions"] = _repetitions(proxy, bands, llm_prims.annotations, _target(task), settings)
    raw["complete"] = True
    raw["wall_seconds"] = time.perf_counter() - t_task
    return raw


def _text_id(text: str, by_id: dict[str, GoldDoc], ids: Sequence[str]) -> str | None:
    for i in ids:
        if by_id[i].text == text:
            return i
    return None


def _train(task: GoldTask, rows, docs, settings: E2ESettings, work: Path, log: Log):
    """Fine-tune (or reuse) the task's proxy on the train split of its annotations."""
    from falconer_assets.metamodel.base_model import resolve_base_model
    from falconer_assets.proxy.checkpoint import checkpoint_version, save_checkpoint, stored_version, training_examples
    from falconer_assets.proxy.model import NTEProxy
    from falconer_assets.warehouse.rows import annotation_set_version

    base = resolve_base_model(settings.base_model)
    version, inputs = checkpoint_version(annotation_set_version(rows), {"base_model": settings.base_model},
                                         settings.train, "e2e-1")
    folder = work / task.name / "proxy"
    if stored_version(folder) == version:
        log(f"{task.name}: reusing the proxy in {folder}")
        info = json.loads((folder / "falconer_train.json").read_text())
        return NTEProxy.load(str(folder)), {**info, "reused": True}
    examples, skipped = training_examples([r for r in rows if r.split == "train"], docs)
    model = NTEProxy.load(base, seed=settings.train.seed)
    stats = model.train(examples, settings.train, log=lambda m: log(f"{task.name}: {m}"))
    save_checkpoint(model, folder, version, inputs)
    info = {k: v for k, v in stats.items() if isinstance(v, (int, float, bool)) and v == v}
    info.update(examples=len(examples), skipped=skipped)
    (folder / "falconer_train.json").write_text(json.dumps(info))
    return model, {**info, "reused": False}


def _target(task: GoldTask):
    from falconer_assets.cascade import QualityTarget

    return QualityTarget(**task.quality)


def _band(d: dict):
    from falconer_assets.cascade import Band

    return Band.from_dict(d)


def _cascade(task, plan, proxy, rows, docs, by_id, test_ids, llm_ids, llm, settings: E2ESettings, log: Log) -> dict:
    """Calibrate a band per sub-task on the held-out annotations, run the cascade on the test documents,
    the F1-vs-LLM-share curve, and the seeded repetitions of the guarantee."""
    from falconer_assets.cascade import CascadePrimitives, calibrate
    from falconer_assets.cascade.bands import heldout_scores
    from falconer_assets.llm.executor import LLMPrimitives
    from falconer_assets.plan.sandbox import run_plan

    target = _target(task)
    bands, calib = {}, {}
    for c in dict.fromkeys((c.kind, c.instruction) for c in plan.calls):
        scores, oracle = heldout_scores(proxy, rows, docs, c)
        if not scores:
            continue
        bands[c] = calibrate(*c, scores, oracle, target)
        calib[c] = {"n": len(scores), "band": bands[c].to_dict()}
    test_texts = [by_id[i].text for i in test_ids]
    prims = LLMPrimitives(llm.chat)
    cascade = CascadePrimitives(proxy, prims, bands)
    t0 = time.perf_counter()
    out = run_plan(plan, test_texts, cascade.get_label, cascade.get_span)
    wall = time.perf_counter() - t0
    routed = [i for i in test_ids if by_id[i].text in cascade.routed_texts]
    result = {"cascade_run": {"wall_seconds": wall, "llm_seconds": prims.llm_seconds, "llm_calls": len(prims.annotations),
                              "tokens": prims.tokens, "llm_share": cascade.llm_share, "docs_to_llm": len(routed),
                              "docs": len(test_ids), "stats": {f"{k}|{q}": v for (k, q), v in cascade.stats.items()}},
              "bands": [{"kind": k, "instruction": q, **v} for (k, q), v in calib.items()],
              "target": target.model_dump()}
    result_out = {i: result_json(r) for i, r in zip(test_ids, out)}
    log(f"{task.name}: cascade sent {len(routed)}/{len(test_ids)} test docs to the LLM "
        f"({cascade.llm_share:.1%} of primitive answers)")

    # F1 vs share: the same plan with the least certain share of each primitive call sent to the LLM,
    # on the documents where the LLM-alone answers exist (cache hits).
    llm_texts = [by_id[i].text for i in llm_ids]
    curve = {}
    for b in settings.budgets:
        bp = _BudgetPrimitives(proxy, LLMPrimitives(llm.chat), b)
        curve[str(b)] = {"outputs": {i: result_json(r) for i, r in zip(llm_ids, run_plan(plan, llm_texts, bp.get_label, bp.get_span))},
                         "llm_share": bp.share}
    return {**result, "cascade_outputs": result_out, "curve": curve}


def _repetitions(proxy, bands: dict, llm_answers, target, settings: E2ESettings) -> dict:
    """Per sub-task: calibrate on seeded random subsets (as large as the held-out split) of the test
    documents the LLM answered, measure on the rest; the LLM-alone answers are the oracle."""
    from falconer_assets.cascade import repetitions
    from falconer_assets.cascade.bands import scores_and_oracle

    out = {}
    for (kind, q), band in bands.items():
        answers = [a for a in llm_answers if a.kind == kind and a.instruction == q and a.parse_ok]
        n_cal = band.n_calibration
        if len(answers) < n_cal + 10:
            continue
        scores, oracle = scores_and_oracle(proxy, (kind, q), [a.text for a in answers],
                                           [a.label if kind == "label" else a.spans for a in answers])
        reps = repetitions(kind, scores, oracle, target, n_calibration=n_cal, reps=settings.repetitions, seed=0)
        out[f"{kind}|{q}"] = {"n_calibration": n_cal, "n_docs": len(scores), "reps": reps,
                              "met": sum(bool(r["met"]) for r in reps), "of": len(reps)}
    return out


class _BudgetPrimitives:
    """Proxy primitives that send the least certain ``budget`` share of each call's texts to the LLM
    (labels: P(yes) closest to 0.5; spans: lowest document confidence). For the F1-vs-share curve."""

    def __init__(self, proxy, llm, budget: float):
        self.proxy, self.llm, self.budget = proxy, llm, budget
        self.answers = self.to_llm = 0

    @property
    def share(self) -> float:
        """Share of primitive answers given by the LLM."""
        return self.to_llm / self.answers if self.answers else 0.0

    def _pick(self, uncertainty: list[float]) -> set[int]:
        k = math.ceil(self.budget * len(uncertainty) - 1e-9)
        order = sorted(range(len(uncertainty)), key=lambda i: -uncertainty[i])
        self.answers += len(uncertainty)
        self.to_llm += k
        return set(order[:k])

    def get_label(self, texts, instruction):
        scores = self.proxy.get_label_scores(texts, instruction)
        pick = self._pick([-abs(s - 0.5) for s in scores])
        llm = dict(zip(sorted(pick), self.llm.get_label([texts[i] for i in sorted(pick)], instruction)))
        return [llm[i] if i in llm else s >= 0.5 for i, s in enumerate(scores)]

    def get_span(self, texts, instruction):
        from falconer_assets.cascade import span_confidence

        spans, conf = span_confidence(self.proxy, texts, instruction)
        pick = self._pick([-c for c in conf])
        llm = dict(zip(sorted(pick), self.llm.get_span([texts[i] for i in sorted(pick)], instruction)))
        return [llm.get(i, s) for i, s in enumerate(spans)]


# ------------------------------------------------------------------------------------------- score


def _doc_counts(task: GoldTask, metric: str, docs: Sequence[GoldDoc], results: Sequence[dict | None]) -> list[tuple[int, int, int]]:
    """Per-document ``(true positives, predicted, gold)`` of one metric; summing them gives micro P/R/F1.

    ``retrieval``: the document retrieved vs its gold label. ``spans``: exact-match entities after
    word-level BIO conversion (:func:`falconer_assets.metrics.spans_to_bio` and seqeval's
    ``get_entities``, so the micro F1 equals seqeval's). ``values``: normalised values vs the gold
    value set; documents without value gold are left out (``(0, 0, 0)``).
    """
    from seqeval.metrics.sequence_labeling import get_entities

    from falconer_assets.metrics import spans_to_bio

    out = []
    for d, r in zip(docs, results):
        if metric == "retrieval":
            p, g = predicted_positive(r), bool(d.label)
            out.append((int(p and g), int(p), int(g)))
        elif metric == "spans":
            pred = {(e[1], e[2]) for e in get_entities(spans_to_bio(d.text, predicted_spans(r)))}
            gold = {(e[1], e[2]) for e in get_entities(spans_to_bio(d.text, d.spans or ()))}
            out.append((len(pred & gold), len(pred), len(gold)))
        elif metric == "values":
            if d.values is None:
                out.append((0, 0, 0))
                continue
            pred = predicted_values(r)
            out.append((len(pred & d.values), len(pred), len(d.values)))
        else:
            raise ValueError(f"unknown metric {metric!r}")
    return out


def _prf(counts) -> tuple[float, float, float]:
    tp = sum(c[0] for c in counts)
    n_pred = sum(c[1] for c in counts)
    n_gold = sum(c[2] for c in counts)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def f1_with_interval(counts: Sequence[tuple[int, int, int]], seed: int = 0, n_boot: int = 1000) -> dict:
    """Micro P/R/F1 of per-document counts with a 95% document-level bootstrap interval of the F1.

    Returns ``{"f1", "precision", "recall", "low", "high", "n" (documents), "gold" (gold units)}``.
    """
    import numpy as np

    from falconer_assets.metrics import bootstrap_interval

    arr = np.asarray(counts, dtype=float).reshape(-1, 3)
    p, r, f = _prf(counts)

    def f1_of(idx) -> float:
        tp, n_pred, n_gold = arr[idx].sum(0)
        return float(2 * tp / (n_pred + n_gold)) if n_pred + n_gold else 0.0

    low, high = bootstrap_interval(f1_of, len(arr), n_boot=n_boot, seed=seed) if len(arr) else (0.0, 0.0)
    return {"f1": f, "precision": p, "recall": r, "low": low, "high": high, "n": len(arr),
            "gold": int(arr[:, 2].sum()) if len(arr) else 0}


def _outputs(raw: dict, system: str) -> dict[str, dict | None]:
    if system == "cascade":
        return raw.get("cascade_outputs", {})
    return raw["outputs"].get(system, {})


def score_task(raw: dict, task: GoldTask) -> dict:
    """Scores of one raw run: every system against gold on the same documents, the proxy and the cascade
    against the LLM-alone answers, the curve, the guarantee repetitions and the costs.

    Returns a JSON-safe dict; ``systems[<metric>][<system>]`` is :func:`f1_with_interval` on the
    documents the LLM-alone run answered (so the three systems share documents), and
    ``systems_all_test`` the proxy and the cascade on every test document.
    """
    docs = {d.id: d for d in corpus_of(task, raw["settings"]["seed"], raw["settings"]["max_docs"])}
    llm_ids, test_ids = raw["llm_ids"], raw["test_ids"]
    out: dict = {"task": task.name, "instruction": task.instruction, "n_test": len(test_ids), "n_llm": len(llm_ids),
                 "primary": task.scoring[-1], "plan": raw["plan"], "sample": raw["sample"]}
    systems, all_test, agreement = {}, {}, {}
    for metric in task.scoring:
        systems[metric] = {}
        for system in ("llm", "proxy", "cascade"):
            res = _outputs(raw, system)
            if not res:
                continue
            ids = [i for i in llm_ids if i in res]
            systems[metric][system] = f1_with_interval(
                _doc_counts(task, metric, [docs[i] for i in ids], [result_from_json(res[i]) for i in ids]))
            if system != "llm":
                all_test.setdefault(metric, {})[system] = f1_with_interval(
                    _doc_counts(task, metric, [docs[i] for i in test_ids], [result_from_json(res[i]) for i in test_ids]))
                # agreement with the LLM-alone run: the LLM's output as the reference
                ref = _reference_docs(task, metric, docs, raw)
                if ref:
                    agreement.setdefault(metric, {})[system] = f1_with_interval(
                        _doc_counts(task, metric, [ref[i] for i in ids], [result_from_json(res[i]) for i in ids]))
    out["systems"], out["systems_all_test"], out["vs_llm"] = systems, all_test, agreement
    primary = task.scoring[-1]
    out["curve"] = [{"budget": float(b), "llm_share": c["llm_share"],
                     **f1_with_interval(_doc_counts(task, primary, [docs[i] for i in llm_ids],
                                                     [result_from_json(c["outputs"].get(i)) for i in llm_ids]))}
                    for b, c in raw.get("curve", {}).items()]
    out["repetitions"] = {k: {kk: vv for kk, vv in v.items() if kk != "reps"} | {
        "mean_achieved": _mean([_achieved_value(r.get("achieved"), k, raw.get("target") or {}) for r in v["reps"]]),
        "mean_llm_share": _mean([r.get("llm_share") for r in v["reps"]])} for k, v in raw.get("repetitions", {}).items()}
    out["bands"] = raw.get("bands", [])
    out["target"] = raw.get("target")
    out["costs"] = _costs(raw)
    return out


def _achieved_value(achieved, sub_task: str, target: dict) -> float | None:
    """The measure a repetition's target is about: span agreement, or the label's recall / precision."""
    if not isinstance(achieved, dict):
        return achieved
    return achieved.get("agreement") if sub_task.startswith("span|") else achieved.get(target.get("target"))


def _mean(values) -> float | None:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and v == v]
    return sum(vals) / len(vals) if vals else None


def _reference_docs(task: GoldTask, metric: str, docs: dict[str, GoldDoc], raw: dict) -> dict[str, GoldDoc]:
    """The LLM-alone output turned into 'gold' documents, to score the proxy and the cascade against it."""
    ref = {}
    for i, obj in raw["outputs"]["llm"].items():
        r = result_from_json(obj)
        d = docs[i]
        if metric == "retrieval":
            ref[i] = GoldDoc(i, d.text, label=predicted_positive(r))
        elif metric == "spans":
            ref[i] = GoldDoc(i, d.text, spans=tuple(predicted_spans(r)))
        else:
            ref[i] = GoldDoc(i, d.text, values=frozenset(predicted_values(r)) if d.values is not None else None)
    return ref


def _costs(raw: dict) -> dict:
    """Seconds, calls and tokens of each system, per document, and the projected cost ratio to LLM-alone.

    Falconer's fixed cost is planning + annotation (original LLM latencies) + training; its per-document
    cost is the proxy's wall time, plus for the cascade the LLM seconds of the routed documents. The ratio
    is projected for the task's corpus and for a corpus of 100,000 documents."""
    n_llm = max(len(raw["llm_ids"]), 1)
    n_test = max(len(raw["test_ids"]), 1)
    llm_per_doc = raw["llm_run"]["llm_seconds"] / n_llm
    fixed = raw["plan"]["llm_seconds"] + raw["annotation"]["llm_seconds"] + raw.get("train", {}).get("seconds", 0.0)
    proxy_per_doc = raw.get("proxy_run", {}).get("wall_seconds", 0.0) / n_test
    cr = raw.get("cascade_run", {})
    cascade_per_doc = (cr.get("wall_seconds", 0.0) + cr.get("llm_seconds", 0.0)) / n_test if cr else None
    out = {"llm_seconds_per_doc": llm_per_doc, "llm_calls": raw["llm_run"]["calls"], "llm_tokens": raw["llm_run"]["tokens"],
           "fixed_seconds": fixed, "annotation_calls": raw["annotation"]["calls"],
           "annotation_tokens": raw["annotation"]["tokens"], "proxy_seconds_per_doc": proxy_per_doc,
           "cascade_seconds_per_doc": cascade_per_doc, "cascade_llm_calls": cr.get("llm_calls"),
           "cascade_tokens": cr.get("tokens"), "train_seconds": raw.get("train", {}).get("seconds")}
    for label, n in (("corpus", raw["corpus_docs"]), ("100k", 100_000)):
        base = n * llm_per_doc
        if base:
            out[f"proxy_cost_ratio_{label}"] = (fixed + n * proxy_per_doc) / base
            if cascade_per_doc is not None:
                out[f"cascade_cost_ratio_{label}"] = (fixed + n * cascade_per_doc) / base
    return out


# ------------------------------------------------------------------------------------------ report


def _fmt(m: dict | None) -> str:
    if not m:
        return "-"
    return f"{m['f1']:.2f} [{m['low']:.2f}, {m['high']:.2f}]"


def markdown(scores: list[dict], settings: E2ESettings, header: str = "") -> str:
    """The results as markdown: F1 vs gold per system, agreement with the LLM, the guarantee, costs."""
    lines = [header,
             "| task | metric | test docs (gold units) | LLM alone | proxy | cascade | cascade LLM share | "
             "proxy vs LLM | cascade vs LLM |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in scores:
        for metric, by_system in s["systems"].items():
            llm = by_system.get("llm", {})
            lines.append(
                f"| {s['task']} | {metric}{' (primary)' if metric == s['primary'] else ''} | {llm.get('n', '-')} "
                f"({llm.get('gold', '-')}) | {_fmt(llm)} | {_fmt(by_system.get('proxy'))} | "
                f"{_fmt(by_system.get('cascade'))} | "
                f"{_share(s)} | {_fmt(s['vs_llm'].get(metric, {}).get('proxy'))} | "
                f"{_fmt(s['vs_llm'].get(metric, {}).get('cascade'))} |")
    lines += ["", "F1 [95% document bootstrap interval]; all systems on the same test documents "
              "(never annotated, never in the Appendix B pool).", "",
              "### The cascade's guarantee, repeated", "",
              "| task | sub-task | target | calibration docs | met in | mean achieved | mean LLM share |",
              "|---|---|---|---|---|---|---|"]
    for s in scores:
        t = s.get("target") or {}
        for k, r in s.get("repetitions", {}).items():
            lines.append(f"| {s['task']} | {k} | {t.get('target')} >= {t.get('value')} (delta {t.get('delta')}) | "
                         f"{r['n_calibration']} | {r['met']}/{r['of']} | {_num(r['mean_achieved'])} | "
                         f"{_num(r['mean_llm_share'])} |")
    lines += ["", "### Cost", "",
              "| task | LLM calls (LLM alone) | LLM s/doc | proxy s/doc | cascade s/doc | fixed s (plan + annotation + "
              "training) | annotation calls | cost ratio proxy / LLM (corpus, 100k docs) | cascade / LLM (corpus, 100k) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in scores:
        c = s["costs"]
        lines.append(f"| {s['task']} | {c['llm_calls']} | {c['llm_seconds_per_doc']:.2f} | {c['proxy_seconds_per_doc']:.4f} | "
                     f"{_num(c['cascade_seconds_per_doc'], 3)} | {c['fixed_seconds']:.0f} | {c['annotation_calls']} | "
                     f"{_num(c.get('proxy_cost_ratio_corpus'))}, {_num(c.get('proxy_cost_ratio_100k'), 3)} | "
                     f"{_num(c.get('cascade_cost_ratio_corpus'))}, {_num(c.get('cascade_cost_ratio_100k'), 3)} |")
    return "\n".join(lines) + "\n"


def _share(s: dict) -> str:
    return f"{s['cascade_share']:.1%}" if s.get("cascade_share") is not None else "-"


def _num(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def plot(scores: list[dict], path: Path) -> None:
    """F1 (primary metric, vs gold) against the share of primitive answers given by the LLM, one panel per task:
    the budgeted-cascade curve, and the proxy, the calibrated cascade and the LLM alone as points with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(scores), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, s in zip(axes[0], scores):
        curve = sorted(s["curve"], key=lambda c: c["llm_share"])
        if curve:
            ax.plot([c["llm_share"] for c in curve], [c["f1"] for c in curve], "-", color="0.6",
                    label="least-certain share to LLM")
        sys = s["systems"][s["primary"]]
        for name, x, color in (("proxy", 0.0, "tab:blue"), ("cascade", s.get("cascade_share") or 0.0, "tab:green"),
                               ("llm", 1.0, "tab:red")):
            m = sys.get(name)
            if m:
                ax.errorbar([x], [m["f1"]], yerr=[[m["f1"] - m["low"]], [m["high"] - m["f1"]]], fmt="o", color=color,
                            capsize=3, label={"llm": "LLM alone"}.get(name, name))
        ax.set_title(f"{s['task']} ({s['primary']}, n={s['n_llm']})", fontsize=9)
        ax.set_xlabel("share of answers from the LLM")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("F1 vs gold")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(task_names: Sequence[str], settings: E2ESettings, out: Path, work: Path, log: Log = print,
        stages: str = "all", force: bool = False, report_only: bool = False) -> list[dict]:
    """Run (or resume) the benchmark and write ``<out>/e2e.json``, ``e2e.md`` and ``e2e.png``.

    A task whose complete raw record exists in ``work`` is not run again unless ``force``; with
    ``report_only`` nothing runs and the report is rebuilt from the raw records.

    Raises:
        ValueError: an unknown task name.
    """
    from falconer_assets.llm.client import ChatLLM

    unknown = [t for t in task_names if t not in GOLD_TASKS]
    if unknown:
        raise ValueError(f"unknown e2e task(s) {unknown}; known: {sorted(GOLD_TASKS)}")
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    llm = None
    scores = []
    try:
        for name in task_names:
            task = GOLD_TASKS[name]
            raw_path = work / f"{name}.raw.json"
            raw = json.loads(raw_path.read_text()) if raw_path.is_file() else None
            same = raw is not None and raw.get("settings") == json.loads(json.dumps(settings.as_dict()))
            fresh = same and raw.get("complete")
            if not report_only and (force or not fresh) and not (stages == "llm" and same):
                if llm is None:
                    llm = ChatLLM(model=settings.llm_model, base_url=settings.base_url,
                                  cache_path=work / "llm_cache.duckdb")
                raw = run_task(task, settings, llm, work, log, stages=stages)
                raw_path.write_text(json.dumps(raw, indent=1, default=str))
            if raw and raw.get("complete"):
                s = score_task(raw, task)
                s["cascade_share"] = raw.get("cascade_run", {}).get("llm_share")
                scores.append(s)
    finally:
        if llm is not None:
            llm.close()
    (out / "e2e.json").write_text(json.dumps({"settings": settings.as_dict(), "tasks": scores}, indent=1, default=str))
    if scores:
        plot(scores, out / "e2e.png")
    return scores
