"""Execution scoring of a plan for one planning-benchmark case: run it with the oracle, compare tables.

The **output table** of a plan on a corpus maps each retrieved document's id to its fields:

* a span field becomes the set of its spans' texts, stripped and lowercased; an empty set is dropped
  (nothing extracted is no value);
* a bool field stays a bool;
* for an instruction whose fields are all span fields, a document left with no field is not in the
  table (a row with nothing extracted is no row); with no fields (retrieval only) or a bool field,
  every non-None item is a row, ``{}`` included.

A plan scores **exact match** when its table equals the expected one, and **field F1** over the
``(doc id, field, value)`` triples of both tables (a retrieval-only row is the triple ``(id, "", "")``;
two empty tables have F1 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from falconer_assets.bench.planning_cases import Case, Oracle, corpus
from falconer_assets.plan.limits import PlanLimits
from falconer_assets.plan.sandbox import PlanRuntimeError, PlanValidationError, run_plan, validate_plan
from falconer_assets.plan.worker import PlanWorkerError, run_plan_isolated

__all__ = ["Score", "normalize_table", "expected_table", "triples", "field_f1", "score_plan"]

Table = dict[str, dict[str, object]]

#: Limits of a benchmark plan run (one batch holds a whole domain, 32 documents).
BENCH_LIMITS = PlanLimits(wall_seconds=60.0)


@dataclass
class Score:
    """The execution score of one plan on one case.

    Attributes:
        exact: 1.0 when the plan's output table equals the expected table, else 0.0.
        f1, precision, recall: field-level scores over ``(doc, field, value)`` triples, in [0, 1].
        error: why the plan could not run (validation or runtime error), else None (then all scores 0).
        unknown_questions: ``[kind, question]`` pairs the oracle could not map to an attribute.
        questions: ``[kind, question]`` of every distinct primitive call the plan made.
        table: the plan's output table (sets as sorted lists), for inspection.
    """

    exact: float
    f1: float
    precision: float
    recall: float
    error: str | None = None
    unknown_questions: list = field(default_factory=list)
    questions: list = field(default_factory=list)
    table: dict = field(default_factory=dict)


def normalize_table(results: Sequence[dict | None], ids: Sequence[str], fields: Sequence[dict]) -> Table:
    """The output table (see the module doc) of a plan's ``results`` (one item per id, in order).

    Values of span fields may be ``Span`` objects or plain strings (the expected items are strings).

    Raises:
        ValueError: ``results`` and ``ids`` differ in length.
    """
    if len(results) != len(ids):
        raise ValueError(f"{len(results)} results for {len(ids)} documents")
    names = [f["name"] for f in fields]
    span_only = bool(names)  # refined per item: a bool value makes the row count
    table: Table = {}
    for doc_id, item in zip(ids, results):
        if item is None:
            continue
        row: dict[str, object] = {}
        has_bool = False
        for key, value in item.items():
            if isinstance(value, bool):
                row[key] = value
                has_bool = True
                continue
            texts = frozenset(str(getattr(v, "text", v)).strip().lower() for v in value)
            texts = texts - {""}
            if texts:
                row[key] = texts
        if row or not span_only or has_bool:
            table[doc_id] = row
    return table


def expected_table(case: Case) -> Table:
    """The expected output table of ``case`` on its domain's corpus (from its gold function)."""
    recs = corpus(case.domain)
    return normalize_table([case.gold(r) for r in recs], [r["id"] for r in recs], case.fields)


def triples(table: Table) -> set[tuple[str, str, object]]:
    """``(doc id, field, value)`` for every value of ``table``; a row without fields is ``(id, "", "")``."""
    out: set[tuple[str, str, object]] = set()
    for doc_id, row in table.items():
        if not row:
            out.add((doc_id, "", ""))
        for key, value in row.items():
            if isinstance(value, bool):
                out.add((doc_id, key, value))
            else:
                out.update((doc_id, key, v) for v in value)
    return out


def field_f1(pred: Table, gold: Table) -> tuple[float, float, float]:
    """``(precision, recall, f1)`` of ``pred``'s triples against ``gold``'s; (1, 1, 1) when both are empty."""
    p, g = triples(pred), triples(gold)
    if not p and not g:
        return 1.0, 1.0, 1.0
    hit = len(p & g)
    precision = hit / len(p) if p else 0.0
    recall = hit / len(g) if g else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _jsonable(table: Table) -> dict:
    return {d: {k: (v if isinstance(v, bool) else sorted(v)) for k, v in row.items()} for d, row in table.items()}


def score_plan(case: Case, source: str, *, isolated: bool = True,
               runner: Callable | None = None) -> Score:
    """Run the plan ``source`` on ``case``'s corpus with the oracle primitives and score its output table.

    Args:
        case: the benchmark case (domain, fields, gold).
        source: the plan's Python source.
        isolated: run the plan in the limited worker process (:func:`run_plan_isolated`, for LLM-written
            plans) or in this process (:func:`run_plan`, for trusted reference plans in tests).
        runner: replaces both (same signature as ``run_plan``), for tests.

    Returns:
        A :class:`Score`; a plan that does not validate or fails at run time (error, limit, malformed
        result) scores 0 with ``error`` set. Never raises for a bad plan.

    Raises:
        falconer_assets.plan.worker.PlanWorkerError: the worker process cannot be started.
    """
    recs = corpus(case.domain)
    oracle = Oracle(recs)
    asked: list[list[str]] = []

    def label(texts, question):
        if ["label", question] not in asked:
            asked.append(["label", question])
        return oracle.get_label(texts, question)

    def span(texts, question):
        if ["span", question] not in asked:
            asked.append(["span", question])
        return oracle.get_span(texts, question)

    run = runner or (run_plan_isolated if isolated else run_plan)
    try:
        plan = validate_plan(source)
        results = run(plan, [r["text"] for r in recs], label, span, BENCH_LIMITS)
    except PlanWorkerError:
        raise
    except (PlanValidationError, PlanRuntimeError) as exc:
        return Score(0.0, 0.0, 0.0, 0.0, error=f"{type(exc).__name__}: {exc}"[:500],
                     unknown_questions=sorted(set(map(list, oracle.unknown))), questions=asked)
    pred = normalize_table(results, [r["id"] for r in recs], case.fields)
    gold = expected_table(case)
    precision, recall, f1 = field_f1(pred, gold)
    unknown = []
    for kind, q in oracle.unknown:
        if [kind, q] not in unknown:
            unknown.append([kind, q])
    return Score(float(pred == gold), f1, precision, recall, None, unknown, asked, _jsonable(pred))
