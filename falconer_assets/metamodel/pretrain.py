"""Incubate our own NTE metamodel: continual NTE pre-training of an offline encoder.

No IE-pretrained encoder (Cuckoo, GLiNER, NuNER) can be downloaded here (MODELS.md), so we
do what Cuckoo did at small scale (Peng et al. 2025; Falconer paper 3.6): keep training a
general encoder (all-MiniLM-L6-v2) on next-tokens-extraction examples before any task
fine-tuning. The examples come from the ``pretrain`` split of every source in
:mod:`falconer_assets.metamodel.sources` (their ``test`` split is never seen):

* WNUT-16 tweets, one span question per entity type ("What are the person names
  mentioned?"), plus one absent type per tweet as an explicit "nothing to extract";
* spaCy ``en_core_web_sm`` silver entities over Debian descriptions, one question per type;
* Debian Section / debtags as Yes/No questions ("Is this package a game?"), balanced;
* SpamAssassin ham/spam as "Is this email spam?", balanced.

The result is saved like any proxy checkpoint (``NTEProxy.save``) under
``cache_dir()/metamodel/<base>-<recipe hash>``, so it is built once per recipe and reused by
every task's ``proxy_checkpoint`` (it is the default ``ProxyResource.base_model``); the main
job never rebuilds it. Build with ``python -m falconer_assets.metamodel build``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from falconer_assets.proxy.encoders import cache_dir, resolve_encoder
from falconer_assets.proxy.training import TrainConfig

CODE_VERSION = "1"
"""Bump when example construction changes: it is part of the cache key."""

REPORT_FILE = "pretrain_report.json"
"""Written into the metamodel directory: recipe, example counts per source, loss, seconds."""


PRETRAIN_TRAIN = TrainConfig(epochs=1, lr=1e-4, head_lr=1e-3, batch_size=16, max_length=128, tag_weight=3.0,
                             seed=0, dev_fraction=0.0, patience=2, label_balance=False,
                             long_examples="truncate")
"""The training settings of the metamodel's pre-training: one pass, no dev split, no label re-weighting (the
label sources are drawn balanced already, :func:`_label_examples`, and every metamodel so far was trained so),
long examples truncated to ``max_length`` (as every metamodel so far: with windows, the "no" examples' extra
windows tilt the balanced label sources toward No, and the quick metamodel then answered No to every
Debian question, where the truncated one answered Yes to every one; neither transfers, see test_metamodel)."""

_KEYED_TRAIN_FIELDS = ("epochs", "lr", "head_lr", "batch_size", "max_length", "tag_weight", "seed")
_UNKEYED_TRAIN_DEFAULTS = {"weight_decay": 0.01, "warmup_ratio": 0.1, "dev_fraction": 0.0, "min_dev": 8,
                           "patience": 2, "max_steps": None, "label_balance": False,
                           "long_examples": "truncate"}
"""The other :class:`TrainConfig` fields, at the values every metamodel built so far was trained with:
they enter :meth:`PretrainRecipe.key` only when a recipe changes them, so the keys of existing builds
(and of the committed benchmark points, docs/bench/quality.json) stay what they were."""


@dataclass(frozen=True)
class PretrainRecipe:
    """What the metamodel is pre-trained on and how (the cache key is a hash of it).

    Attributes:
        base: starting encoder, a :func:`~falconer_assets.proxy.encoders.resolve_encoder`
            name (``"minilm"``, ``"mpnet"``) or path; never ``"metamodel"``.
        wnut_examples, silver_examples, debian_examples, spam_examples: examples drawn
            (seeded) from each source's pre-train split; 0 leaves a source out.
        train: the :class:`~falconer_assets.proxy.training.TrainConfig` of the pre-training run;
            its ``seed`` also seeds the example draw.
    """

    base: str = "minilm"
    wnut_examples: int = 2400
    silver_examples: int = 1600
    debian_examples: int = 1600
    spam_examples: int = 800
    train: TrainConfig = PRETRAIN_TRAIN

    def key(self) -> str:
        """``<base>-<12 hex>``: hash of the recipe, :data:`CODE_VERSION` and the data files.

        Every field counts; the training fields outside :data:`_KEYED_TRAIN_FIELDS` only when they
        differ from :data:`_UNKEYED_TRAIN_DEFAULTS`.
        """
        payload = self.as_dict()
        train = payload.pop("train")
        payload.update({k: train[k] for k in _KEYED_TRAIN_FIELDS})
        payload.update({k: v for k, v in train.items()
                        if k not in _KEYED_TRAIN_FIELDS and v != _UNKEYED_TRAIN_DEFAULTS.get(k)})
        h = hashlib.sha256(json.dumps(payload, sort_keys=True).encode())
        h.update(CODE_VERSION.encode())
        for path in _data_files():
            if path.is_file():
                h.update(hashlib.sha256(path.read_bytes()).digest())
        base = Path(self.base).name if "/" in self.base else self.base
        return f"{base}-{h.hexdigest()[:12]}"

    def as_dict(self) -> dict:
        """The recipe as JSON-ready data (``train`` as a dict)."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "train"},
                "train": self.train.model_dump()}


DEFAULT_RECIPE = PretrainRecipe()
"""The recipe behind ``base_model="metamodel"`` (docs/proxy.md has the evidence)."""

QUICK_RECIPE = PretrainRecipe(wnut_examples=96, silver_examples=48, debian_examples=96, spam_examples=0)
"""A minutes-long recipe for tests and ``bench quality --quick`` (no npm download)."""


def _silver_used() -> dict[str, str]:
    from falconer_assets.metamodel.sources import SILVER_QUESTIONS

    return {k: q for k, q in SILVER_QUESTIONS.items() if k not in SILVER_DROPPED}


SILVER_DROPPED = ("PERSON", "GPE")
"""spaCy's small model tags "Java", "Haskell", "Qt" as PERSON and "Linux", "Node.js" as GPE
in package descriptions (data/README.md); those two silver types are left out, so the
metamodel does not learn that programming languages are people."""


def _repo_data() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "bench"


def _data_files() -> list[Path]:
    return [_repo_data() / "debian_labels.jsonl", _repo_data() / "debian_spacy_silver.jsonl"]


def metamodel_dir(recipe: PretrainRecipe = DEFAULT_RECIPE) -> Path:
    """Cache directory of ``recipe``'s metamodel (it may not exist yet)."""
    return cache_dir() / "metamodel" / recipe.key()


def is_built(path: Path) -> bool:
    """True when ``path`` holds a finished metamodel (checkpoint files and report)."""
    return (path / REPORT_FILE).is_file() and (path / "config.json").is_file()


def require_metamodel(recipe: PretrainRecipe = DEFAULT_RECIPE) -> Path:
    """Path of the built metamodel for ``recipe``.

    Raises:
        FileNotFoundError: when it has not been built; the message names the command.
    """
    path = metamodel_dir(recipe)
    if not is_built(path):
        raise FileNotFoundError(
            f"the metamodel proxy base is not built yet ({path}). Build it once with "
            "`python -m falconer_assets.metamodel build` (about 15 minutes on 2 CPU cores), "
            "or set ProxyResource.base_model / FALCONER_PROXY_BASE to 'minilm'."
        )
    return path


def _span_examples(records, questions: dict[str, str], n: int, rng: random.Random):
    """One example per (record, type with spans) plus one absent type per record; n sampled."""
    from falconer_assets.proxy.model import TrainExample

    pool = []
    for r in records:
        present = [k for k, v in r.spans.items() if v and k in questions]
        absent = [k for k in questions if not r.spans.get(k)]
        for k in present:
            pool.append(TrainExample("span", r.text, questions[k], spans=list(r.spans[k])))
        if absent:
            k = rng.choice(sorted(absent))
            pool.append(TrainExample("span", r.text, questions[k], spans=[]))
    rng.shuffle(pool)
    return pool[:n]


def _label_examples(records, questions: dict[str, str], n: int, rng: random.Random):
    """Balanced Yes/No examples: per question up to n/(2*questions) positives and negatives."""
    from falconer_assets.proxy.model import TrainExample

    per = max(1, n // (2 * max(len(questions), 1)))
    out = []
    for key, question in sorted(questions.items()):
        pos = [r for r in records if r.labels.get(key) is True]
        neg = [r for r in records if r.labels.get(key) is False]
        rng.shuffle(pos)
        rng.shuffle(neg)
        k = min(per, len(pos), len(neg)) if pos else 0
        out += [TrainExample("label", r.text, question, label=True) for r in pos[:k]]
        out += [TrainExample("label", r.text, question, label=False) for r in neg[: max(k, per // 4)]]
    rng.shuffle(out)
    return out[:n]


def pretrain_examples(recipe: PretrainRecipe, log: Callable[[str], None] = print):
    """The NTE pre-training examples of ``recipe``, from the sources' ``pretrain`` splits.

    Returns:
        ``(examples, counts)``: a shuffled ``list[TrainExample]`` and ``{source: n}``.

    Raises:
        FileNotFoundError: if a bundled data file is missing. RuntimeError: if SpamAssassin
            is requested but cannot be installed (see ``sources.ensure_spamassassin``).
    """
    from falconer_assets.metamodel import sources as src

    SILVER_USED = _silver_used()  # noqa: N806
    rng = random.Random(recipe.train.seed)
    counts: dict[str, int] = {}
    examples = []

    def add(name, exs):
        counts[name] = len(exs)
        examples.extend(exs)
        log(f"pretrain source {name}: {len(exs)} examples")

    debian_path = _repo_data() / "debian_labels.jsonl"
    if recipe.wnut_examples:
        recs = [r for r in src.load_wnut16() if r.split == "pretrain"]
        add("wnut16", _span_examples(recs, src.WNUT_QUESTIONS, recipe.wnut_examples, rng))
    if recipe.silver_examples:
        recs = [r for r in src.load_debian_silver(_repo_data() / "debian_spacy_silver.jsonl", debian_path)
                if r.split == "pretrain"]
        add("debian_silver", _span_examples(recs, SILVER_USED, recipe.silver_examples, rng))
    if recipe.debian_examples:
        recs = [r for r in src.load_debian_labels(debian_path) if r.split == "pretrain"]
        add("debian_labels", _label_examples(recs, src.DEBIAN_QUESTIONS, recipe.debian_examples, rng))
    if recipe.spam_examples:
        recs = [r for r in src.load_spamassassin() if r.split == "pretrain"]
        add("spam", _label_examples(recs, {"spam": src.SPAM_QUESTION}, recipe.spam_examples, rng))
    rng.shuffle(examples)
    return examples, counts


def build_metamodel(
    recipe: PretrainRecipe = DEFAULT_RECIPE,
    out: Path | None = None,
    force: bool = False,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> Path:
    """Pre-train (or reuse) the metamodel of ``recipe``; return its checkpoint directory.

    Skips all work when ``out`` (default :func:`metamodel_dir`) already holds a finished
    build, unless ``force``. Training writes to ``<out>.tmp`` and renames at the end, so an
    interrupted build never looks finished. ``REPORT_FILE`` records the recipe, example
    counts per source, training stats and seconds.

    Raises:
        ValueError: if ``recipe.base`` is ``"metamodel"`` (it cannot start from itself) or
            the recipe draws no example.
    """
    from falconer_assets.proxy.model import NTEProxy

    if recipe.base.strip().lower() in {"", "metamodel"}:
        raise ValueError("PretrainRecipe.base must be an encoder such as 'minilm', not the metamodel")
    out = Path(out) if out is not None else metamodel_dir(recipe)
    if is_built(out) and not force:
        log(f"metamodel already built: {out}")
        return out
    t0 = time.perf_counter()
    examples, counts = pretrain_examples(recipe, log)
    if not examples:
        raise ValueError(f"recipe {recipe} draws no pre-training example")
    base = resolve_encoder(recipe.base)
    model = NTEProxy.load(base, device=device, seed=recipe.train.seed)
    stats = model.train(examples, recipe.train, log=log, progress_desc="build metamodel (once)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    report = {
        "recipe": recipe.as_dict(),
        "code_version": CODE_VERSION,
        "base_path": base,
        "examples": counts,
        "train": {k: v for k, v in stats.items() if isinstance(v, (int, float))},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    log(f"metamodel saved to {out} in {report['seconds']} s")
    return out
