"""Proxy quality benchmark: learning curves of the NTE proxy on gold-labelled data.

Falconer's claim (paper 4.1, Figure 3) is that a small NTE tagger fine-tuned on 64..2,048
labelled samples tracks a large model. This module measures our proxy the same way, on
data we can get offline (:mod:`falconer_assets.metamodel.sources`, test splits only for
scoring):

* ``wnut16``: WNUT-16 tweets, one span question per entity type; seqeval exact-match span
  F1 over all types (micro) and per type.
* ``debian``: Debian packages, two Yes/No questions with gold from the archive
  ("Is this package a game?" = Section ``games``; "Is this package a software library?");
  label F1 per question.
* ``spam``: SpamAssassin, "Is this email spam?"; label F1.

For every base encoder (plain MiniLM-L6, plain MPNet-base, our metamodel) and training size
``n`` (0 = zero-shot, then 64 / 256 / 512 / 2,048 samples drawn as nested prefixes of one
seeded permutation), one proxy is fine-tuned with the recipe of :func:`train_config` (15%
of the ``n`` samples' examples split off as the dev split for early stopping) and scored on the test
split. Each finished point is stored in a JSON results file and skipped on a re-run, so an
interrupted benchmark resumes.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from falconer_assets.metrics import label_prf, span_prf
from falconer_assets.proxy.model import TrainExample
from falconer_assets.proxy.training import TrainConfig

SIZES = (64, 256, 512, 2048)
"""Training sizes of the full benchmark (paper 4.1: "from 64 to 2048 samples")."""

BASES = ("minilm", "metamodel", "mpnet")
"""Base encoders compared (names of :func:`falconer_assets.metamodel.base_model.resolve_base_model`)."""

DATASETS = ("wnut16", "debian", "spam")


@dataclass(frozen=True)
class Dataset:
    """A benchmark dataset: a training pool and a test set of gold examples.

    Attributes:
        name: ``"wnut16"``, ``"debian"`` or ``"spam"``.
        kind: ``"span"`` or ``"label"``.
        questions: ``{key: question}`` asked of every record.
        pool: training records (the sources' ``pretrain`` split), in a seeded order; the
            first ``n`` are the ``n``-sample training set.
        test: test records (the sources' ``test`` split, possibly capped).
        max_length: token budget per prompt.
    """

    name: str
    kind: str
    questions: dict
    pool: list
    test: list
    max_length: int


def load_dataset(name: str, seed: int = 0, test_cap: int | None = None) -> Dataset:
    """Build benchmark dataset ``name`` from :mod:`falconer_assets.metamodel.sources`.

    Args:
        name: one of :data:`DATASETS`.
        seed: orders the training pool and picks the capped test subset.
        test_cap: at most this many test records (seeded choice); ``None`` keeps all.

    Raises:
        ValueError: for an unknown name. RuntimeError: if SpamAssassin cannot be installed.
    """
    from falconer_assets.metamodel import sources as src

    if name == "wnut16":
        recs, kind, questions, max_length = src.load_wnut16(), "span", dict(src.WNUT_QUESTIONS), 96
    elif name == "debian":
        recs, kind, max_length = src.load_debian_labels(), "label", 128
        questions = {k: src.DEBIAN_QUESTIONS[k] for k in ("game", "library")}
    elif name == "spam":
        recs, kind, max_length = src.load_spamassassin(), "label", 128
        questions = {"spam": src.SPAM_QUESTION}
    else:
        raise ValueError(f"unknown benchmark dataset {name!r}; expected one of {DATASETS}")
    rng = random.Random(seed)
    pool = sorted((r for r in recs if r.split == "pretrain"), key=lambda r: r.id)
    test = sorted((r for r in recs if r.split == "test"), key=lambda r: r.id)
    rng.shuffle(pool)
    if test_cap is not None and len(test) > test_cap:
        test = sorted(rng.sample(test, test_cap), key=lambda r: r.id)
    return Dataset(name, kind, questions, pool, test, max_length)


def training_examples(ds: Dataset, n: int, seed: int = 0, absent_per_record: int = 2) -> list[TrainExample]:
    """The ``n``-sample training set of ``ds`` as proxy examples.

    Label datasets: every question for each of the first ``n`` pool records. Span datasets:
    for each record, the questions whose type occurs in it plus ``absent_per_record``
    seeded absent types (explicit "nothing to extract" examples), as the generator does
    for real tasks.

    Raises:
        ValueError: if ``n`` exceeds the pool.
    """
    if n > len(ds.pool):
        raise ValueError(f"{ds.name}: {n} samples requested, the training pool has {len(ds.pool)}")
    rng = random.Random(seed)
    out: list[TrainExample] = []
    for r in ds.pool[:n]:
        if ds.kind == "label":
            out += [TrainExample("label", r.text, q, label=r.labels[k]) for k, q in ds.questions.items()]
            continue
        present = [k for k in ds.questions if r.spans.get(k)]
        absent = [k for k in ds.questions if not r.spans.get(k)]
        for k in present + rng.sample(absent, min(absent_per_record, len(absent))):
            out.append(TrainExample("span", r.text, ds.questions[k], spans=list(r.spans.get(k, ()))))
    return out


def base_recipe(base: str) -> TrainConfig:
    """The fine-tuning recipe of a base: ``FINE_TUNE_RECIPE`` for the NTE-pretrained metamodel,
    ``FRESH_HEAD_RECIPE`` for a plain encoder (MPNet with encoder lr 1e-4, MODELS.md)."""
    from falconer_assets.proxy.training import FINE_TUNE_RECIPE, FRESH_HEAD_RECIPE

    if base == "metamodel":
        return FINE_TUNE_RECIPE
    if base == "mpnet":
        return FRESH_HEAD_RECIPE.model_copy(update={"lr": 1e-4})
    return FRESH_HEAD_RECIPE


def train_config(n_examples: int, base: str, seed: int = 0, max_length: int = 128,
                 example_budget: int = 640) -> TrainConfig:
    """The fine-tuning recipe for a training set of ``n_examples`` (docs/proxy.md).

    :func:`base_recipe` (batch 8, 15% dev split, patience 3, best epoch restored) under a
    compute cap: at most ``max(example_budget, min(n_examples, 2 * example_budget))``
    examples are seen, i.e. up to 10 epochs for small sets and at least part of one pass
    for large ones.
    """
    recipe = base_recipe(base)
    seen = max(example_budget, min(n_examples, 2 * example_budget))
    epochs = max(1, min(recipe.epochs, math.ceil(seen / max(n_examples, 1))))
    return recipe.model_copy(update={
        "epochs": epochs, "max_length": max_length, "seed": seed, "max_steps": math.ceil(seen / recipe.batch_size)})


def score(model, ds: Dataset, batch_size: int = 64) -> dict[str, float]:
    """Test-split scores of an :class:`~falconer_assets.proxy.model.NTEProxy` on ``ds``.

    Returns:
        Span datasets: ``{"f1": micro seqeval span F1 over all types, "precision",
        "recall", "f1/<type>": per-type F1}``. Label datasets: ``{"f1": mean F1 over
        questions, "f1/<key>": per question, "accuracy/<key>"}``.
    """
    texts = [r.text for r in ds.test]
    out: dict[str, float] = {}
    if ds.kind == "span":
        all_t, all_g, all_p = [], [], []
        for key, q in ds.questions.items():
            gold = [list(r.spans.get(key, ())) for r in ds.test]
            pred = model.get_span(texts, q, batch_size)
            out[f"f1/{key}"] = span_prf(texts, gold, pred)["f1"]
            all_t += texts
            all_g += gold
            all_p += pred
        m = span_prf(all_t, all_g, all_p)
        out.update(f1=m["f1"], precision=m["precision"], recall=m["recall"])
        return out
    f1s = []
    for key, q in ds.questions.items():
        gold = [r.labels[key] for r in ds.test]
        pred = model.get_label(texts, q, batch_size)
        out[f"f1/{key}"] = label_prf(gold, pred)["f1"]
        out[f"accuracy/{key}"] = sum(g == p for g, p in zip(gold, pred)) / len(gold)
        f1s.append(out[f"f1/{key}"])
    out["f1"] = sum(f1s) / len(f1s)
    return out


@dataclass(frozen=True)
class BenchPlan:
    """What one benchmark run covers.

    Attributes:
        datasets, bases, sizes: the grid (0 in ``sizes`` = zero-shot).
        test_cap: test records per dataset (``None`` = all).
        example_budget: examples seen per fine-tuning run (:func:`train_config`).
        metamodel_recipe: ``"default"`` or ``"quick"``
            (:mod:`falconer_assets.metamodel.pretrain`).
        seed: data order, head init and training seed.
        max_size: ``((base, n), ...)``: sizes above ``n`` are skipped for that base (a
            compute cap: MPNet-base is ~5x slower than MiniLM on CPU).
        span_test_cap: test records for span datasets (each is asked every type's question).
    """

    datasets: tuple[str, ...] = DATASETS
    bases: tuple[str, ...] = BASES
    sizes: tuple[int, ...] = (0, *SIZES)
    test_cap: int | None = 300
    example_budget: int = 640
    metamodel_recipe: str = "default"
    seed: int = 0
    max_size: tuple[tuple[str, int], ...] = (("mpnet", 256),)
    span_test_cap: int | None = 150


FULL = BenchPlan()
"""The full table (docs/bench/quality.md)."""

QUICK = BenchPlan(
    datasets=("wnut16", "debian"), bases=("minilm", "metamodel"), sizes=(0, 64), test_cap=48,
    example_budget=96, metamodel_recipe="quick", span_test_cap=24,
)
"""``--quick``: minutes on 2 cores; exercises every code path with tiny sizes."""


def _resolve(base: str, plan: BenchPlan, log) -> str:
    from falconer_assets.metamodel.base_model import resolve_base_model
    from falconer_assets.metamodel.pretrain import DEFAULT_RECIPE, QUICK_RECIPE, build_metamodel

    if base == "metamodel":
        recipe = QUICK_RECIPE if plan.metamodel_recipe == "quick" else DEFAULT_RECIPE
        return str(build_metamodel(recipe, log=log))  # cached: built once per recipe
    return resolve_base_model(base)


def _point_key(plan: BenchPlan, base: str, dataset: str, n: int) -> str:
    from falconer_assets.metamodel.pretrain import DEFAULT_RECIPE, QUICK_RECIPE

    recipe = QUICK_RECIPE if plan.metamodel_recipe == "quick" else DEFAULT_RECIPE
    ident = recipe.key() if base == "metamodel" else base
    cap = plan.span_test_cap if dataset == "wnut16" else plan.test_cap
    r = base_recipe(base)
    tag = "" if base == "metamodel" else f"|recipe={r.lr:g}/{r.head_lr:g}/{r.tag_weight:g}"
    return f"{dataset}|{base}|{ident}|n={n}|budget={plan.example_budget}|test={cap}|seed={plan.seed}{tag}"


def run(plan: BenchPlan, results_path: Path, log: Callable[[str], None] = print,
        train: bool = True) -> list[dict]:
    """Run (or resume) the benchmark grid of ``plan``; return all result rows.

    With ``train=False`` nothing is computed: the rows already in ``results_path`` that
    belong to the grid are returned (to re-render the table of a partial run).

    Each row: ``{"key", "dataset", "base", "n", "n_examples", "metrics", "train_seconds",
    "eval_seconds", "best_epoch", "steps"}``. Rows are appended to ``results_path`` (a JSON
    list) as they finish; rows already there with the same key are reused.
    """
    from falconer_assets.proxy.model import NTEProxy

    results_path = Path(results_path)
    done = {r["key"]: r for r in json.loads(results_path.read_text())} if results_path.is_file() else {}
    rows: list[dict] = []
    for dname in plan.datasets:
        if not train:
            for base in plan.bases:
                rows += [r for n in plan.sizes if (r := done.get(_point_key(plan, base, dname, n)))]
            continue
        cap = plan.span_test_cap if dname == "wnut16" else plan.test_cap
        ds = load_dataset(dname, plan.seed, cap)
        log(f"{dname}: pool {len(ds.pool)}, test {len(ds.test)}, questions {len(ds.questions)}")
        for base in plan.bases:
            base_path = _resolve(base, plan, log)
            for n in plan.sizes:
                key = _point_key(plan, base, dname, n)
                if key in done:
                    rows.append(done[key])
                    continue
                if n > len(ds.pool) or n > dict(plan.max_size).get(base, n):
                    log(f"skip {key}: over the pool ({len(ds.pool)}) or the base's size cap")
                    continue
                model = NTEProxy.load(base_path, device="cpu", seed=plan.seed)
                model.max_length = min(model.max_length, ds.max_length)
                stats, t0 = {}, time.perf_counter()
                examples = training_examples(ds, n, plan.seed) if n else []
                if examples:
                    cfg = train_config(len(examples), base, plan.seed, ds.max_length, plan.example_budget)
                    stats = model.train(examples, cfg, log=lambda m: None)
                train_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                metrics = score(model, ds)
                row = {
                    "key": key, "dataset": dname, "base": base, "n": n, "n_examples": len(examples),
                    "metrics": {k: round(v, 4) for k, v in metrics.items()},
                    "train_seconds": round(train_s, 1), "eval_seconds": round(time.perf_counter() - t1, 1),
                    "best_epoch": stats.get("best_epoch"), "steps": stats.get("steps"),
                }
                log(f"{dname:7s} {base:9s} n={n:5d} F1 {metrics['f1']:.3f} "
                    f"(train {row['train_seconds']} s, eval {row['eval_seconds']} s)")
                rows.append(row)
                done[key] = row
                results_path.parent.mkdir(parents=True, exist_ok=True)
                results_path.write_text(json.dumps(list(done.values()), indent=1) + "\n")
    return rows


def markdown_table(rows: Sequence[dict], plan: BenchPlan) -> str:
    """One markdown table: a line per (dataset, metric, base), a column per size."""
    sizes = list(plan.sizes)
    head = "| dataset | metric | base | " + " | ".join("zero-shot" if n == 0 else str(n) for n in sizes) + " |"
    lines = [head, "|---|---|---|" + "---:|" * len(sizes)]
    by = {(r["dataset"], r["base"], r["n"]): r for r in rows}
    for dname in plan.datasets:
        metric_names = sorted({m for r in rows if r["dataset"] == dname for m in r["metrics"]
                               if m == "f1" or m.startswith("f1/")}, key=lambda m: (m != "f1", m))
        for metric in metric_names:
            for base in plan.bases:
                cells = []
                for n in sizes:
                    r = by.get((dname, base, n))
                    cells.append(f"{r['metrics'][metric]:.3f}" if r and metric in r["metrics"] else "")
                label = "F1 (all)" if metric == "f1" else metric.replace("f1/", "F1 ")
                lines.append(f"| {dname} | {label} | {base} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], plan: BenchPlan, path: Path, dataset: str | None = None) -> Path:
    """Learning-curve PNG: F1 against training samples, a line per base, a panel per dataset.

    ``dataset`` restricts the figure to one panel (used by the ``eval`` asset). Zero-shot
    points are drawn at x = 16 on the log axis and labelled "0".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [dataset] if dataset else list(plan.datasets)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, dname in zip(axes[0], names):
        for base in plan.bases:
            pts = sorted((r["n"], r["metrics"]["f1"]) for r in rows if r["dataset"] == dname and r["base"] == base)
            if pts:
                ax.plot([16 if n == 0 else n for n, _ in pts], [f for _, f in pts], marker="o", label=base)
        ticks = [16, *[n for n in plan.sizes if n]]
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, ["0", *[str(n) for n in plan.sizes if n]])
        ax.set_ylim(0, 1)
        ax.set_title({"wnut16": "WNUT-16 span F1", "debian": "Debian label F1 (game, library)",
                      "spam": "SpamAssassin spam F1"}.get(dname, dname), fontsize=10)
        ax.set_xlabel("training samples")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("F1 (test split)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
