"""The annotation flow of the generator (paper 3.5, Appendix B), as a pure function of its inputs.

For every unique sub-task ``(kind, instruction)`` of a plan, :func:`annotate_sub_tasks`

1. reuses the rows cached under its :func:`subtask_cache_key`, when there are any;
2. otherwise asks the annotator (an LLM through :class:`~falconer_assets.llm.executor.LLMPrimitives`)
   on every sampled doc and, for a label sub-task with the Appendix B heuristic on, on extra
   training docs picked by :func:`~falconer_assets.generator.sampling.select_label_candidates`
   from a pool scored zero-shot by the proxy base; a span sub-task of a plan that also has label
   sub-tasks is annotated on their "likely positive" picks too (:func:`likely_positive_picks`), so
   a rare extraction (a genre, found only in games) gets training spans;
3. hands each newly annotated sub-task to ``save`` as soon as it is done (a later failure keeps it);
4. puts the human answers (:mod:`falconer_assets.inputs.labels`) in place of the annotator's: the LLM is
   never asked a (sub-task, doc) pair a human answered; the human row (origin ``"human"``) keeps the doc's
   split from sampling, and a doc the flow would not have annotated joins the training split.

I/O is injected (the cached rows, ``save``, the chat callable, the zero-shot scorer), so the
Dagster asset around it only reads and writes the warehouse and reports metadata.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from falconer_assets.generator.sampling import (
    HELDOUT_STRATUM,
    LABEL_REASONS,
    HeldoutStratum,
    candidate_pool,
    check_label_shares,
    extra_budget,
    extra_heldout_docs,
    heldout_stratum,
    select_label_candidates,
)
from falconer_assets.inputs.corpus import Document
from falconer_assets.inputs.labels import HumanLabel
from falconer_assets.llm.executor import LLMPrimitives
from falconer_assets.progress import progress as progress_of
from falconer_assets.versions import digest
from falconer_assets.warehouse.rows import AnnotationRow

PROGRESS_EVERY = 25
"""Docs per chunk of annotation calls: one progress line (count, rate, ETA) per chunk; the calls of a
chunk may run concurrently."""

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

    Held-out enlargement (issue 10): when the random held-out docs hold fewer than
    ``heldout_positives`` positives of some label sub-task, up to ``heldout_extra_max`` extra held-out
    docs are drawn at random from the top ``heldout_top_share`` of a second pool (at most
    ``heldout_pool`` docs outside the sample and the training pool), ranked by the highest zero-shot
    ``P(Yes)`` over the plan's label questions; they are annotated on every sub-task (split
    ``heldout``, origin ``heldout_stratum``) and every held-out doc is weighted by its stratum
    (:class:`~falconer_assets.generator.sampling.HeldoutStratum`), so the eval estimate stays
    unbiased. ``heldout_positives=0`` keeps the random held-out docs only.
    """

    label_heuristic: bool = True
    label_extra_ratio: float = 1.0
    random_share: float = 0.25
    positive_share: float = 0.75
    candidate_pool: int = 1000
    seed: int = 0
    heldout_positives: int = 30
    heldout_extra_max: int = 40
    heldout_top_share: float = 0.1
    heldout_pool: int = 500

    def check(self) -> None:
        """Raise ``ValueError`` naming the bad setting (checked before any LLM call)."""
        check_label_shares(self.random_share, self.positive_share)
        extra_budget(0, self.label_extra_ratio)
        for name in ("candidate_pool", "heldout_positives", "heldout_extra_max", "heldout_pool"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.heldout_top_share < 1:
            raise ValueError(f"heldout_top_share must be in (0, 1), got {self.heldout_top_share}")

    def settings(self) -> dict:
        """The training-pick settings as a plain dict (part of a label sub-task's cache key; the
        held-out settings are not: they do not change the training picks)."""
        return {name: getattr(self, name) for name in LabelHeuristic.model_fields if not name.startswith("heldout_")}


def _picks_extra_docs(heuristic: LabelHeuristic) -> bool:
    """Whether the Appendix B heuristic adds docs at all under these settings."""
    return heuristic.label_heuristic and heuristic.label_extra_ratio > 0


def subtask_cache_key(corpus: str, sample_version: str, sub_task: SubTask, heuristic: LabelHeuristic,
                      llm_identity: Sequence[Any], scorer: str, extra_docs: Sequence[str] = (),
                      human_docs: Sequence[str] = ()) -> str:
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

    ``human_docs``: the docs among the sub-task's candidates (the sample, and the Appendix B pool or
    picks) that a human answered, so the LLM was not asked on them; the key holds them (sorted,
    de-duplicated) only when there are any, so every key without human labels is what it was before
    they existed. Only the set of docs counts, not the human answers: editing an answer reuses the rows.

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
    if human_docs:
        extra = {**(extra or {}), "human_docs": sorted(set(human_docs))}
    return digest("subtask", corpus, sample_version, kind, instruction, list(llm_identity), extra)


def stratum_cache_key(corpus: str, sample_version: str, sub_task: SubTask, llm_identity: Sequence[Any],
                      extra_docs: Sequence[str], human_docs: Sequence[str] = ()) -> str:
    """Key of one sub-task's annotations on the extra held-out docs (:class:`HeldoutStratum`) in the
    sub-task cache: the corpus, the sample, the sub-task, the LLM and the doc ids (sorted). Separate from
    :func:`subtask_cache_key`, so enlarging the held-out split leaves the cached training answers valid.
    ``human_docs``: the extra docs a human answered (not asked of the LLM), in the key only when any."""
    kind, instruction = sub_task
    parts = [sorted(set(human_docs))] if human_docs else []
    return digest("heldout_stratum", corpus, sample_version, kind, instruction, list(llm_identity),
                  sorted(set(extra_docs)), *parts)


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
        """Counts for the metadata table: sample/extra/human docs, yes labels or spans, dropped, unparseable."""
        sample = sum(r.origin == "sample" for r in self.rows)
        human = sum(r.origin == "human" for r in self.rows)
        kind = self.kind
        return {
            "kind": kind, "instruction": self.instruction, "sample_docs": sample,
            "extra_docs": len(self.rows) - sample - human, "human_docs": human,
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
        stratum: the held-out enlargement, or ``None`` when the held-out split is the random sample only.
        human_rows: rows answered by a human (origin ``"human"``), in place of the annotator's.
        human_outside_sample: of those, rows of docs neither in the corpus sample nor among the extra
            held-out docs (added to the training split).
    """

    sub_tasks: list[SubTaskAnnotations]
    budget: int
    pool_size: int
    stratum: HeldoutStratum | None = None
    llm_calls: int = 0
    llm_cache_hits: int = 0
    llm_tokens: int = 0
    llm_seconds: float = 0.0
    missing_ids: list[str] = field(default_factory=list)
    human_rows: int = 0
    human_outside_sample: int = 0

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
    chat_many: Callable[[list[list[dict]]], list[Any]] | None = None,
    log: Callable[[str], None] = lambda _m: None,
    cached_stratum: Callable[[str], dict | None] = lambda _k: None,
    save_stratum: Callable[[str, dict], None] = lambda _k, _v: None,
    human: Mapping[SubTask, Mapping[str, HumanLabel]] | None = None,
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
        chat_many: optional ``chat_many(batch) -> [ChatResult, ...]`` that keeps several calls in flight
            (e.g. ``LLMResource.chat_many``); the docs of a sub-task go to it in chunks of
            :data:`PROGRESS_EVERY`.
        load_scorer: builds the zero-shot scorer; called at most once, only if a label sub-task
            needs scoring.
        log: progress lines (every :data:`PROGRESS_EVERY` calls, with rate and ETA).
        cached_stratum, save_stratum: the cache of held-out enlargement decisions
            (``HeldoutStratum.to_dict()``, or ``{}`` for "not enlarged") by key, so a re-run neither
            scores the held-out pool again nor calls the LLM.
        human: human answers, ``{(kind, instruction): {doc_id: HumanLabel}}``
            (:meth:`~falconer_assets.inputs.labels.HumanLabels.by_sub_task`). The annotator is never asked
            those (sub-task, doc) pairs; each becomes a row of origin ``"human"`` with the doc's split from
            sampling (the corpus sample's, ``heldout`` for an extra held-out doc, else ``train``) and, in
            the held-out split, its stratum weight. The Appendix B picks and the held-out enlargement are
            decided on the annotator's answers alone (a doc a human answered counts as not annotated there).

    Returns:
        The :class:`AnnotationResult`.

    Raises:
        ValueError: a bad heuristic setting (before any LLM call), no sampled doc left, or a human answer
            for a sub-task the plan does not ask or a doc not in ``docs``.
    """
    heuristic.check()
    missing = [i for i, _ in sampled if i not in docs]
    sample = [(i, s) for i, s in sampled if i in docs]
    if not sample:
        raise ValueError(f"no sampled documents for corpus {corpus!r}")
    sample_version = digest(sample)
    unique = list(dict.fromkeys(sub_tasks))
    labels = [st for st in unique if st[0] == "label"]
    human = {st: dict(answers) for st, answers in (human or {}).items() if answers}
    for st, answers in human.items():
        if st not in unique:
            raise ValueError(f"human labels for a sub-task the plan does not ask: {st!r}")
        if unknown := [doc_id for doc_id in answers if doc_id not in docs]:
            raise ValueError(f"human labels for a doc not in corpus {corpus!r}: {unknown[0]!r}")
    sample_ids = {i for i, _ in sample}

    n_train = sum(s == "train" for _, s in sample)
    budget = extra_budget(n_train, heuristic.label_extra_ratio) if heuristic.label_heuristic else 0
    # the docs a label sub-task may be annotated on (the sample, the Appendix B pool): the human docs among
    # them are not asked of the LLM, so they are part of the cache key; others leave the key as it was
    candidates = sample_ids | (set(candidate_pool(docs, {i for i, _ in sampled}, heuristic.candidate_pool,
                                                  heuristic.seed)) if budget and human else set())

    def key(st: SubTask, extra_docs: Sequence[str] = (), among: set[str] = candidates) -> str:
        return subtask_cache_key(corpus, sample_version, st, heuristic, llm_identity, scorer_name, extra_docs,
                                 sorted(set(human.get(st, ())) & among))

    found = {st: cached(key(st)) for st in labels}
    todo = [st for st in labels if not found[st]]

    pool = (candidate_pool(docs, {i for i, _ in sampled}, heuristic.candidate_pool, heuristic.seed)
            if budget and todo else [])
    scorer: LabelScorer | None = None
    llm = LLMPrimitives(chat, chat_many)
    progress = {"total": sum(len(sample) + (budget if pool else 0) for _ in todo), "t0": time.perf_counter()}
    done: dict[SubTask, SubTaskAnnotations] = {}

    def annotate(st: SubTask, items: list[tuple[str, str, str]]) -> list[AnnotationRow]:
        kind, instruction = st
        answered = human.get(st, {})
        progress["total"] -= sum(doc_id in answered for doc_id, _, _ in items)
        items = [item for item in items if item[0] not in answered]  # a human answered: the LLM is not asked
        rows = []
        with progress_of(f"LLM {kind} {instruction[:40]!r}", len(items), "call") as bar:
            for start in range(0, len(items), PROGRESS_EVERY):  # chunks: concurrent calls, a progress line each
                chunk = items[start:start + PROGRESS_EVERY]
                answers = llm.annotate_many(kind, [docs[doc_id].text for doc_id, _, _ in chunk], instruction)
                for (doc_id, split, origin), a in zip(chunk, answers):
                    rows.append(AnnotationRow(
                        kind=kind, instruction=instruction, doc_id=doc_id, split=split, label=a.label,
                        spans=tuple(a.spans), dropped=tuple(a.dropped), parse_ok=a.parse_ok, raw=a.raw,
                        latency_s=a.latency_s, tokens=a.tokens, origin=origin))
                n_done, total = len(llm.annotations), progress["total"]
                rate = n_done / max(time.perf_counter() - progress["t0"], 1e-9)
                log(f"annotated {n_done}/{total} ({rate:.2f}/s, ETA {max(total - n_done, 0) / rate:.0f} s)")
                bar.update(len(chunk), tokens=sum(a.tokens for a in llm.annotations),
                           cache_hits=sum(a.cached for a in llm.annotations))
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
    found = {st: cached(key(st, picks, sample_ids | set(picks))) for st in spans}
    progress["total"] += sum(len(sample) + len(picks) for st in spans if not found[st])
    for st in spans:
        if found[st]:
            done[st] = SubTaskAnnotations(st, found[st], reused=True)
            continue
        rows = annotate(st, sample_items + [(doc_id, "train", "likely_positive") for doc_id in picks])
        save(key(st, picks, sample_ids | set(picks)), rows)
        done[st] = SubTaskAnnotations(st, rows, reused=False)

    stratum = _heldout_stratum(heuristic, docs, sampled, sample, [(st, done[st].rows) for st in labels],
                               lambda: scorer or load_scorer(), log,
                               lambda extra: digest("stratum", corpus, sample_version, labels, list(llm_identity),
                                                    scorer_name, heuristic.model_dump(), extra),
                               cached_stratum, save_stratum)
    if stratum is not None:  # every sub-task on the extra held-out docs
        progress["total"] += len(stratum.extra) * len(unique)
        for st in unique:
            skey = stratum_cache_key(corpus, sample_version, st, llm_identity, stratum.extra,
                                     sorted(set(human.get(st, ())) & set(stratum.extra)))
            rows = cached(skey)
            if not rows:
                rows = annotate(st, [(doc_id, "heldout", HELDOUT_STRATUM) for doc_id in stratum.extra])
                save(skey, rows)
            done[st].rows = done[st].rows + rows
    extra_heldout = set(stratum.extra) if stratum is not None else set()
    split_of = {**{doc_id: "heldout" for doc_id in extra_heldout}, **dict(sample)}
    for st, answers in human.items():  # the human answers in place of the annotator's
        done[st].rows = ([r for r in done[st].rows if r.doc_id not in answers]
                         + [human_row(h, st, split_of.get(doc_id, "train")) for doc_id, h in answers.items()])
    if stratum is not None:  # every held-out row weighted by its stratum
        for st in unique:
            done[st].rows = [dataclasses.replace(r, weight=stratum.weight(r.doc_id)) if r.split == "heldout"
                             else r for r in done[st].rows]
    return AnnotationResult(
        sub_tasks=[done[st] for st in unique], budget=budget, pool_size=len(pool), llm_calls=len(llm.annotations),
        llm_cache_hits=sum(a.cached for a in llm.annotations), llm_tokens=llm.tokens,
        llm_seconds=llm.llm_seconds, missing_ids=missing, stratum=stratum,
        human_rows=sum(len(answers) for answers in human.values()),
        human_outside_sample=sum(doc_id not in split_of for answers in human.values() for doc_id in answers))


def human_row(answer: HumanLabel, sub_task: SubTask, split: str) -> AnnotationRow:
    """The annotation row of a human answer: origin ``"human"``, ``split`` as given (``"train"`` or
    ``"heldout"``), the answer's label or spans, no LLM cost; ``raw`` names the labels file line.

    Raises:
        ValueError: ``answer`` is not an answer to ``sub_task`` (another kind or question).
    """
    if answer.sub_task != tuple(sub_task):
        raise ValueError(f"human answer to {answer.sub_task!r} given for sub-task {tuple(sub_task)!r}")
    kind, instruction = sub_task
    return AnnotationRow(kind=kind, instruction=instruction, doc_id=answer.doc_id, split=split,
                         label=answer.label if kind == "label" else None, spans=answer.spans,
                         raw=f"human label (labels file line {answer.line_no})", origin="human")


def _heldout_stratum(heuristic: LabelHeuristic, docs: Mapping[str, Document], sampled: Sequence[tuple[str, str]],
                     sample: Sequence[tuple[str, str]], label_rows: Sequence[tuple[SubTask, list[AnnotationRow]]],
                     scorer: Callable[[], LabelScorer], log: Callable[[str], None], key: Callable[[int], str],
                     cached: Callable[[str], dict | None], save: Callable[[str, dict], None]) -> HeldoutStratum | None:
    """The held-out enlargement of :class:`LabelHeuristic` (``heldout_*`` settings), if it is needed.

    Needs label sub-tasks and the heuristic on. The number of extra docs follows from the fewest
    positives any label sub-task has among the random held-out docs and that sub-task's yes-rate on
    its likely-positive picks (:func:`extra_heldout_docs`); only when extra docs are wanted are the
    held-out pool and the random held-out docs scored zero-shot (the highest ``P(Yes)`` over the
    label questions) and the stratum drawn. The decision is cached under ``key(n_extra)``.

    Returns:
        The stratum, or ``None`` when the held-out split stays the random sample.
    """
    if not (heuristic.label_heuristic and heuristic.heldout_positives and heuristic.heldout_extra_max
            and heuristic.heldout_pool and label_rows):
        return None
    heldout = [i for i, split in sample if split == "heldout"]
    sampled_ids = {i for i, _ in sampled}
    training_pool = candidate_pool(docs, sampled_ids, heuristic.candidate_pool, heuristic.seed)
    pool = candidate_pool(docs, sampled_ids | set(training_pool), heuristic.heldout_pool, f"heldout/{heuristic.seed}")
    if not pool or not heldout:
        return None

    def positives(rows: list[AnnotationRow]) -> int:
        return sum(bool(r.label) for r in rows if r.split == "heldout" and r.origin == "sample" and r.usable)

    _, fewest = min(label_rows, key=lambda item: positives(item[1]))
    picked = [bool(r.label) for r in fewest if r.origin == "likely_positive" and r.usable]
    yes_rate = sum(picked) / len(picked) if picked else 0.5
    n_extra = extra_heldout_docs(positives(fewest), heuristic.heldout_positives, yes_rate, heuristic.heldout_extra_max)
    if not n_extra:
        return None
    found = cached(key(n_extra))
    if found is not None:
        return HeldoutStratum.from_dict(found) if found else None
    score = scorer()
    ids = list(pool) + heldout
    texts = [docs[i].text for i in ids]
    per_question = [score(texts, instruction) for (_, instruction), _ in label_rows]
    scores = {i: max(float(s[k]) for s in per_question) for k, i in enumerate(ids)}
    stratum = heldout_stratum({i: scores[i] for i in pool}, {i: scores[i] for i in heldout}, n_extra,
                              heuristic.heldout_top_share, heuristic.seed)
    if stratum is None:
        log(f"held-out split not enlarged: no random held-out doc scores below the top "
            f"{heuristic.heldout_top_share:.0%} of the held-out pool (the weights would be undefined)")
    else:
        log(f"held-out split enlarged by {len(stratum.extra)} docs of the top {stratum.p_high:.0%} stratum "
            f"(random held-out positives {positives(fewest)} < {heuristic.heldout_positives}); weights "
            f"{stratum.weight_high:.3f} (high) / {stratum.weight_low:.3f} (low)")
    save(key(n_extra), {} if stratum is None else stratum.to_dict())
    return stratum
