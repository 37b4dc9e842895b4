"""The annotation flow of the generator (paper 3.5, Appendix B), as a pure function of its inputs.

For every unique sub-task ``(kind, instruction)`` of a plan, :func:`annotate_sub_tasks`

1. reuses the rows cached under its :func:`subtask_cache_key`, when there are any;
2. otherwise asks the annotator (an LLM through :class:`~falconer_assets.llm.executor.LLMPrimitives`)
   on every sampled doc and, for a label sub-task with the Appendix B heuristic on, on extra
   training docs picked by :func:`~falconer_assets.generator.sampling.select_label_candidates`
   from a pool scored zero-shot by the proxy base; a span sub-task of a plan that also has label
   sub-tasks is annotated on their "likely positive" picks too (:func:`likely_positive_picks`), so
   a rare extraction (a genre, found only in games) gets training spans;
3. hands each newly annotated sub-task to ``save`` as soon as it is done (a later failure keeps it).

I/O is injected (the cached rows, ``save``, the chat callable, the zero-shot scorer), so the
Dagster asset around it only reads and writes the warehouse and reports metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from falconer_assets.generator.sampling import (
    LABEL_REASONS,
    candidate_pool,
    check_label_shares,
    extra_budget,
    select_label_candidates,
)
from falconer_assets.inputs.corpus import Document
from falconer_assets.llm.executor import LLMPrimitives
from falconer_assets.versions import digest
from falconer_assets.warehouse.rows import AnnotationRow

SubTask = tuple[str, str]
"""``(kind, instruction)`` of one primitive call of a plan."""

LabelScorer = Callable[[list[str], str], list[float]]
"""``score(texts, question) -> [P(Yes), ...]``: the proxy base's zero-shot label scores."""


class LabelHeuristic(pydantic.BaseModel):
    """Extra training docs for classification sub-tasks, chosen by the paper's Appendix B heuristic.

    For each ``get_label`` sub-task of the plan, besides the corpus sample, the annotator labels
    ``round(label_extra_ratio * n_train)`` more docs (``n_train``: training docs of the corpus
    sample) for that sub-task only. They come from a seeded random pool of at most
    ``candidate_pool`` docs outside the corpus sample, scored zero-shot (``P(Yes)``) by the proxy
    base model; ``random_share`` of them are drawn at random from the pool, and the rest are the
    highest-scored (``positive_share`` of the rest, "likely positives": positives are usually the
    rare class) and the lowest-scored ("likely negatives"). They are training data only (split
    ``train``); the held-out split stays the random corpus sample. Span sub-tasks are not scored
    (paper: "for extraction tasks, we directly employ random sampling"), but when the plan also has
    label sub-tasks they are annotated on the union of those sub-tasks' likely positives as well
    (split ``train``, origin ``likely_positive``): in a plan such as "is it a game? then its genre",
    the spans occur only inside the rare positives, which a random sample barely contains.
    ``label_heuristic=False`` (or ratio 0) annotates the corpus sample only. ``seed`` drives the
    pool and the picks.
    """

    label_heuristic: bool = True
    label_extra_ratio: float = 1.0
    random_share: float = 0.25
    positive_share: float = 0.75
    candidate_pool: int = 1000
    seed: int = 0

    def check(self) -> None:
        """Raise ``ValueError`` naming the bad setting (checked before any LLM call)."""
        check_label_shares(self.random_share, self.positive_share)
        extra_budget(0, self.label_extra_ratio)
        if self.candidate_pool < 0:
            raise ValueError(f"candidate_pool must be >= 0, got {self.candidate_pool}")

    def settings(self) -> dict:
        """The heuristic's settings as a plain dict (part of the sub-task cache key)."""
        return {name: getattr(self, name) for name in LabelHeuristic.model_fields}


def _picks_extra_docs(heuristic: LabelHeuristic) -> bool:
    """Whether the Appendix B heuristic adds docs at all under these settings."""
    return heuristic.label_heuristic and heuristic.label_extra_ratio > 0


def subtask_cache_key(corpus: str, sample_version: str, sub_task: SubTask, heuristic: LabelHeuristic,
                      llm_identity: Sequence[Any], scorer: str, extra_docs: Sequence[str] = ()) -> str:
    """Key of one sub-task's annotations in the sub-task cache: everything its rows depend on.

    That is the corpus, the sample (version of its (id, split) set), the sub-task, the LLM
    (``llm_identity``: endpoint, model, temperature, max tokens) and, for a label sub-task with
    the Appendix B heuristic on, the heuristic settings and the zero-shot ``scorer`` (which decide
    its extra docs). A span sub-task's extra docs are the likely-positive picks of the plan's label
    sub-tasks (:func:`likely_positive_picks`): they are passed as ``extra_docs`` (doc ids; the key
    holds them sorted and de-duplicated), so the key changes exactly when they do, whatever the label
    questions, heuristic settings or scorer that chose them. Without extra docs a span key, and
    every label key (``extra_docs`` is ignored for labels), is what it was before span sub-tasks had
    extra docs, so those cached annotations stay valid. A plan that asks a sub-task already
    annotated under the same key reuses those rows without any LLM call.

    Raises:
        ValueError: ``extra_docs`` given for a label sub-task.
    """
    kind, instruction = sub_task
    extra = None
    if kind == "label":
        if extra_docs:
            raise ValueError("extra_docs are for span sub-tasks (a label sub-task's picks follow from the heuristic)")
        if _picks_extra_docs(heuristic):
            extra = {**heuristic.settings(), "scorer": scorer}
    elif extra_docs:
        extra = {"likely_positive_docs": sorted(set(extra_docs))}
    return digest("subtask", corpus, sample_version, kind, instruction, list(llm_identity), extra)


def likely_positive_picks(label_rows: Sequence[Sequence[AnnotationRow]]) -> list[str]:
    """The union of the label sub-tasks' Appendix B "likely positive" picks, as doc ids.

    Args:
        label_rows: the rows of each label sub-task of the plan (fresh or cached).

    Returns:
        Doc ids of rows with origin ``"likely_positive"``, first-seen order, each once (whatever the
        annotator answered: the pick is the proxy base's guess, the span annotator decides).
    """
    return list(dict.fromkeys(r.doc_id for rows in label_rows for r in rows if r.origin == "likely_positive"))


@dataclass
class SubTaskAnnotations:
    """The annotations of one sub-task: its ``rows``, whether they were ``reused`` from the cache, and
    for a freshly scored label sub-task ``candidates_scored`` and ``scoring_seconds``."""

    sub_task: SubTask
    rows: list[AnnotationRow]
    reused: bool
    candidates_scored: int | None = None
    scoring_seconds: float | None = None

    @property
    def kind(self) -> str:
        """``"label"`` or ``"span"``."""
        return self.sub_task[0]

    @property
    def instruction(self) -> str:
        """The sub-task's question."""
        return self.sub_task[1]

    def yes_rate(self, group: str) -> float | None:
        """Share of parsed "yes" labels among the rows of ``group`` (``"sample_train"``,
        ``"sample_heldout"`` or a reason of :data:`LABEL_REASONS`), 4 decimals; ``None`` if none."""
        parsed = [bool(r.label) for r in self.rows if r.parse_ok
                  and (f"sample_{r.split}" if r.origin == "sample" else r.origin) == group]
        return round(sum(parsed) / len(parsed), 4) if parsed else None

    def summary(self) -> dict:
        """Counts for the metadata table: sample/extra docs, yes labels or spans, dropped, unparseable."""
        sample = sum(r.origin == "sample" for r in self.rows)
        kind = self.kind
        return {
            "kind": kind, "instruction": self.instruction, "sample_docs": sample, "extra_docs": len(self.rows) - sample,
            "hits": sum(bool(r.label) for r in self.rows) if kind == "label" else sum(len(r.spans) for r in self.rows),
            "dropped": sum(len(r.dropped) for r in self.rows),
            "unparseable": sum(not r.parse_ok for r in self.rows),
            "cache": "reused" if self.reused else "annotated",
        }

    def heuristic_summary(self) -> dict:
        """Appendix B picks of a label sub-task: how many per reason and the annotator's yes rates."""
        return {
            "candidates_scored": self.candidates_scored if self.candidates_scored is not None else "cached",
            "scoring_seconds": self.scoring_seconds,
            "picks": {reason: sum(r.origin == reason for r in self.rows) for reason in LABEL_REASONS},
            "llm_yes_rate": {g: self.yes_rate(g) for g in ("sample_train", *LABEL_REASONS)},
        }


@dataclass
class AnnotationResult:
    """What :func:`annotate_sub_tasks` returns.

    Attributes:
        sub_tasks: one entry per unique sub-task, in plan order.
        budget: extra docs per label sub-task (0 when the heuristic is off).
        pool_size: docs in the scored candidate pool (0 when nothing was scored).
        llm_calls, llm_cache_hits, llm_tokens, llm_seconds: the annotator calls made in this run
            (``llm_seconds``: sum of the original call latencies).
        missing_ids: sampled ids that are no longer in the corpus (left out).
    """

    sub_tasks: list[SubTaskAnnotations]
    budget: int
    pool_size: int
    llm_calls: int = 0
    llm_cache_hits: int = 0
    llm_tokens: int = 0
    llm_seconds: float = 0.0
    missing_ids: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[AnnotationRow]:
        """Every annotation row of the task, sub-task by sub-task."""
        return [r for st in self.sub_tasks for r in st.rows]


def annotate_sub_tasks(
    *,
    corpus: str,
    docs: Mapping[str, Document],
    sampled: Sequence[tuple[str, str]],
    sub_tasks: Sequence[SubTask],
    heuristic: LabelHeuristic,
    llm_identity: Sequence[Any],
    scorer_name: str,
    cached: Callable[[str], list[AnnotationRow]],
    save: Callable[[str, list[AnnotationRow]], None],
    chat: Callable[[list[dict]], Any],
    load_scorer: Callable[[], LabelScorer],
    log: Callable[[str], None] = lambda _m: None,
) -> AnnotationResult:
    """Annotate every sub-task of a plan on the corpus sample (plus Appendix B picks), reusing cached ones.

    Label sub-tasks are annotated (or read from the cache) before span sub-tasks: with the heuristic
    on, a span sub-task is also annotated on the union of the label sub-tasks' likely-positive picks
    (split ``train``, origin ``likely_positive``; :func:`likely_positive_picks`), and its cache key
    holds those doc ids. The result keeps plan order.

    Args:
        corpus: corpus name (part of the cache key).
        docs: the corpus documents by id.
        sampled: the corpus sample's ``(doc_id, split)`` pairs; ids no longer in ``docs`` are left out
            and listed in :attr:`AnnotationResult.missing_ids`.
        sub_tasks: the plan's sub-tasks; duplicates are annotated once.
        heuristic: the Appendix B settings.
        llm_identity: endpoint, model, temperature, max tokens of the annotator (cache key).
        scorer_name: name of the zero-shot scorer (cache key of label sub-tasks).
        cached: ``cached(key) -> rows`` (``[]`` when nothing is cached under ``key``).
        save: ``save(key, rows)``, called once per newly annotated sub-task, right after it.
        chat: ``chat(messages) -> ChatResult``-like (see :class:`~falconer_assets.llm.executor.LLMPrimitives`).
        load_scorer: builds the zero-shot scorer; called at most once, only if a label sub-task
            needs scoring.
        log: progress lines (every 25 calls, with rate and ETA).

    Returns:
        The :class:`AnnotationResult`.

    Raises:
        ValueError: a bad heuristic setting (before any LLM call), or no sampled doc left.
    """
    heuristic.check()
    missing = [i for i, _ in sampled if i not in docs]
    sample = [(i, s) for i, s in sampled if i in docs]
    if not sample:
        raise ValueError(f"no sampled documents for corpus {corpus!r}")
    sample_version = digest(sample)
    unique = list(dict.fromkeys(sub_tasks))
    labels = [st for st in unique if st[0] == "label"]

    def key(st: SubTask, extra_docs: Sequence[str] = ()) -> str:
        return subtask_cache_key(corpus, sample_version, st, heuristic, llm_identity, scorer_name, extra_docs)

    found = {st: cached(key(st)) for st in labels}
    todo = [st for st in labels if not found[st]]

    n_train = sum(s == "train" for _, s in sample)
    budget = extra_budget(n_train, heuristic.label_extra_ratio) if heuristic.label_heuristic else 0
    pool = (candidate_pool(docs, {i for i, _ in sampled}, heuristic.candidate_pool, heuristic.seed)
            if budget and todo else [])
    scorer: LabelScorer | None = None
    llm = LLMPrimitives(chat)
    progress = {"total": sum(len(sample) + (budget if pool else 0) for _ in todo), "t0": time.perf_counter()}
    done: dict[SubTask, SubTaskAnnotations] = {}

    def annotate(st: SubTask, items: list[tuple[str, str, str]]) -> list[AnnotationRow]:
        kind, instruction = st
        rows = []
        for doc_id, split, origin in items:
            a = llm.annotate(kind, docs[doc_id].text, instruction)
            rows.append(AnnotationRow(
                kind=kind, instruction=instruction, doc_id=doc_id, split=split, label=a.label,
                spans=tuple(a.spans), dropped=tuple(a.dropped), parse_ok=a.parse_ok, raw=a.raw,
                latency_s=a.latency_s, tokens=a.tokens, origin=origin))
            n_done, total = len(llm.annotations), progress["total"]
            if n_done % 25 == 0:
                rate = n_done / (time.perf_counter() - progress["t0"])
                log(f"annotated {n_done}/{total} ({rate:.2f}/s, ETA {(total - n_done) / rate:.0f} s)")
        return rows

    sample_items = [(doc_id, split, "sample") for doc_id, split in sample]
    for st in labels:  # first: the span sub-tasks are also annotated on their likely-positive picks
        if found[st]:
            done[st] = SubTaskAnnotations(st, found[st], reused=True)
            continue
        items, scored = list(sample_items), {}
        if pool:
            if scorer is None:  # one zero-shot model for every label sub-task
                scorer = load_scorer()
            t_score = time.perf_counter()
            scores = scorer([docs[i].text for i in pool], st[1])
            items += [(doc_id, "train", reason) for doc_id, reason in select_label_candidates(
                dict(zip(pool, scores)), budget, heuristic.random_share, heuristic.positive_share, heuristic.seed)]
            scored = {"candidates_scored": len(pool), "scoring_seconds": round(time.perf_counter() - t_score, 2)}
        rows = annotate(st, items)
        save(key(st), rows)
        done[st] = SubTaskAnnotations(st, rows, reused=False, **scored)

    picks = ([doc_id for doc_id in likely_positive_picks([done[st].rows for st in labels]) if doc_id in docs]
             if _picks_extra_docs(heuristic) else [])
    spans = [st for st in unique if st[0] == "span"]
    found = {st: cached(key(st, picks)) for st in spans}
    progress["total"] += sum(len(sample) + len(picks) for st in spans if not found[st])
    for st in spans:
        if found[st]:
            done[st] = SubTaskAnnotations(st, found[st], reused=True)
            continue
        rows = annotate(st, sample_items + [(doc_id, "train", "likely_positive") for doc_id in picks])
        save(key(st, picks), rows)
        done[st] = SubTaskAnnotations(st, rows, reused=False)
    return AnnotationResult(
        sub_tasks=[done[st] for st in unique], budget=budget, pool_size=len(pool), llm_calls=len(llm.annotations),
        llm_cache_hits=sum(a.cached for a in llm.annotations), llm_tokens=llm.tokens,
        llm_seconds=llm.llm_seconds, missing_ids=missing)
