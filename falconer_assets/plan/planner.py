"""Planner prompting: turn a mining instruction into a validated plan, with error feedback.

Paper section 3.4 ("Planning"): an LLM codifies the user's instruction into a short program
that composes the two primitives ``get_label`` (classification) and ``get_span`` (span
extraction) with explicit control flow and Boolean logic (e.g. "talks about both health and
brain" -> two ``get_label`` calls combined with ``and``).  This module holds the prompt
(:data:`PLANNER_SYSTEM_PROMPT`, written to work for a small local model such as
Qwen2.5-Coder-1.5B-Instruct as well as GPT-class models), the reply parser
(:func:`extract_code`) and a validate-and-retry loop (:func:`plan_with_retries`) that feeds
each rejection back to the LLM, in the spirit of self-debugging (Chen et al., 2023, cited in
the paper's section 2).

The LLM is reached only through a ``chat(messages) -> str`` callable (OpenAI-style message
dicts), so this module has no client or Dagster dependency.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Callable, Sequence

from falconer_assets.plan.limits import DEFAULT_LIMITS, PlanLimits
from falconer_assets.plan.sandbox import (
    PlanRuntimeError,
    PlanValidationError,
    ValidatedPlan,
    run_plan,
    validate_plan,
)
from falconer_assets.plan.worker import run_plan_isolated
from falconer_assets.spans import Span

__all__ = [
    "PLANNER_SYSTEM_PROMPT",
    "EXAMPLE_PLAN",
    "PlanAttempt",
    "build_planner_messages",
    "extract_code",
    "DRY_RUN_SIZES",
    "dry_run_plan",
    "plan_with_retries",
]

#: The paper's Figure 1 example (query-based: filter with get_label, then extract with get_span).
#: The few-shot examples deliberately come from other domains than the bundled Debian tasks,
#: so planning those tasks is a real test of the planner rather than a copy.
EXAMPLE_PLAN = '''def plan(texts):
    is_positive = get_label(texts, "Is this review positive?")
    positive = [i for i, ok in enumerate(is_positive) if ok]
    prices = get_span([texts[i] for i in positive], "What is the price of the laptop?")
    results = [None] * len(texts)
    for i, spans in zip(positive, prices):
        results[i] = {"price": spans}
    return results'''

_EXAMPLE_BASIC = '''def plan(texts):
    speakers = get_span(texts, "Who is the speaker of the talk?")
    results = [None] * len(texts)
    for i, spans in enumerate(speakers):
        results[i] = {"speaker": spans}
    return results'''

_EXAMPLE_BOOLEAN = '''is_health = get_label(texts, "Is this talk about health?")
    is_brain = get_label(texts, "Is this talk about the brain?")
    both = [a and b for a, b in zip(is_health, is_brain)]
    talks = [i for i, ok in enumerate(both) if ok]'''

PLANNER_SYSTEM_PROMPT = f"""You write a short Python function (a "plan") that mines information from a list of documents.

You can use exactly two tools, both already defined (do not import or define them):
- get_label(texts, instruction) -> list[bool]: answers a yes/no question for each text.
- get_span(texts, instruction) -> list[list[Span]]: extracts the answer spans for each text (a Span has .text, .start, .end).
Both take a list of strings and return a list of the same length, in the same order.

Rules:
1. Write exactly one function `def plan(texts):` where texts is a list of strings.
2. The instruction (second argument) must be a fixed English question in double quotes, e.g. "Is this a game?". Never build it from variables.
3. Use only plain Python: for loops, if, list comprehensions, len, range, enumerate, zip. No imports, no while loops, no try, no lambda, no print, no other functions, no names starting with "_".
4. Return a list with one item per text: None if the text is not wanted, otherwise a dict whose keys are exactly the output field names given by the user and whose values are the lists of spans returned by get_span (or a bool from get_label).
5. If the instruction only wants some of the texts (e.g. "games", "spam messages", "positive reviews"), first ask get_label whether each text qualifies, then call get_span only on the kept texts (see Example 2).
6. If a condition has several parts (e.g. "about both health and the brain"), ask one get_label question per part and combine them with and / or / not:
    {_EXAMPLE_BOOLEAN}
7. Reply with ONLY one ```python code block and nothing else.

Example 1
Instruction: Extract the speaker of each TED talk.
Output fields:
- speaker: the name of the speaker
```python
{_EXAMPLE_BASIC}
```

Example 2
Instruction: Extract all laptop prices from positive Amazon reviews.
Output fields:
- price: the laptop price
```python
{EXAMPLE_PLAN}
```"""


PLANNER_MAX_TOKENS = 768
"""Generated-token limit of one planner call (a plan is a few hundred tokens)."""


def _format_fields(fields: Sequence[dict]) -> str:
    lines = []
    for f in fields:
        desc = str(f.get("description") or "").strip()
        lines.append(f"- {f['name']}" + (f": {desc}" if desc else ""))
    return "\n".join(lines)


def _check_fields(fields: Sequence[dict]) -> list[dict]:
    out, seen = [], set()
    for i, f in enumerate(fields):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"].strip():
            raise ValueError(f"field {i} must be a dict with a non-empty str 'name', got {f!r}")
        if f["name"] in seen:
            raise ValueError(f"duplicate field name {f['name']!r}")
        seen.add(f["name"])
        out.append(f)
    return out


def build_planner_messages(
    instruction: str,
    fields: Sequence[dict],
    feedback: Sequence[tuple[str, str]] = (),
) -> list[dict]:
    """Build the chat messages asking the planner LLM for a plan.

    Args:
        instruction: the user's mining instruction, e.g. "Extract all laptop prices from positive
            Amazon reviews".
        fields: output fields, ``[{"name": "price", "description": "..."}]``; the plan's result
            dicts must use exactly these names.  ``description`` is optional.  May be empty
            (then the prompt asks for ``{{}}`` per retrieved text).
        feedback: ``(previous_reply, error_message)`` pairs from earlier failed attempts, oldest
            first; each becomes an assistant turn (the reply) and a user turn (the error and a
            request to fix it).

    Returns:
        OpenAI-style ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``: the
        system prompt :data:`PLANNER_SYSTEM_PROMPT`, the task, then the feedback turns.

    Raises:
        ValueError: empty instruction, a field without a non-empty str ``name``, or duplicate
            field names.

    Source: paper section 3.4 (the planner decomposes the instruction into get_label/get_span
    sub-tasks with explicit control flow).
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("instruction must be a non-empty string")
    fields = _check_fields(fields)
    if fields:
        names = ", ".join(f'"{f["name"]}"' for f in fields)
        field_text = (f"Output fields:\n{_format_fields(fields)}\n"
                      f"Each returned dict must have exactly these keys: {names}.")
    else:
        field_text = "Output fields: none. Return an empty dict {} for each wanted text."
    task = (f"Instruction: {instruction.strip()}\n{field_text}\n\n"
            "Write the plan. Reply with only one ```python code block.")
    messages = [
        {"role": "system", "content": PLANNER_SYSTEM_PROMPT},
        {"role": "user", "content": task},
    ]
    for reply, error in feedback:
        messages.append({"role": "assistant", "content": reply})
        messages.append({"role": "user", "content": (
            f"That plan was rejected with this error:\n{error}\n\n"
            "Fix it and follow the rules. Reply with only one corrected ```python code block.")})
    return messages


_FENCE_PY = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*?)```", re.IGNORECASE | re.DOTALL)
_FENCE_ANY = re.compile(r"```[^\n`]*\r?\n(.*?)```", re.DOTALL)
_FENCE_OPEN = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\r?\n(.*)\Z", re.IGNORECASE | re.DOTALL)


def extract_code(reply: str) -> str:
    """Pull the plan source out of an LLM reply.

    Takes the first fenced block tagged ``python``/``py``; else the first fenced block with
    any or no tag; else, if the reply was cut off inside an unclosed fence (common when a
    small model hits its token limit), everything after the opening fence; else the whole
    reply.  The result is stripped of surrounding blank space.

    Raises:
        PlanValidationError: if the reply is not a str or the extracted code is empty.
    """
    if not isinstance(reply, str):
        raise PlanValidationError(f"planner reply must be a str, got {type(reply).__name__}")
    for pattern in (_FENCE_PY, _FENCE_ANY, _FENCE_OPEN):
        m = pattern.search(reply)
        if m:
            code = m.group(1)
            break
    else:
        code = reply
    # keep the first line's indentation until dedent has seen it, then trim
    code = textwrap.dedent(code.strip("\r\n")).strip()
    if not code:
        raise PlanValidationError("the planner reply contains no code")
    return code


@dataclass
class PlanAttempt:
    """One planner call: the raw LLM reply and why it was rejected (None if accepted)."""

    reply: str
    error: str | None


class _StrictYesNo:
    """A dry-run yes/no answer: works in ``if``/``and``/``or``/``not``/``==``/``sum`` like a bool,
    but raises TypeError when used as a list index (``texts[i] for i in flags``), a mistake a
    bool would hide since ``texts[True]`` is ``texts[1]``."""

    strict_yes_no = True
    __slots__ = ("value",)

    def __init__(self, value: bool):
        self.value = bool(value)

    def __bool__(self) -> bool:
        return self.value

    def __eq__(self, other) -> bool:
        return self.value == bool(other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __add__(self, other):
        return int(self.value) + other

    __radd__ = __add__

    def __repr__(self) -> str:
        return repr(self.value)


_INDEX_HINT = ("a get_label answer (True/False) was used as a list index; get the positions of the "
               "True answers with `[i for i, ok in enumerate(flags) if ok]` and index texts with those")


def _stub_label(texts: list[str], instruction: str) -> list[_StrictYesNo]:
    return [_StrictYesNo(i % 2 == 0) for i in range(len(texts))]


def _stub_span(texts: list[str], instruction: str) -> list[list[Span]]:
    return [[Span.of(t, 0, min(len(t), 5))] for t in texts]


_DRY_TEXTS = ["alpha one", "bravo two", "charlie three", "delta four"]

#: Batch sizes of the dry run, in texts: a plan that misbehaves only at some batch size (e.g. one
#: that returns garbage unless it gets 4 texts) is caught before it mines.
DRY_RUN_SIZES = (1, 3, 4)


def dry_run_plan(
    plan: ValidatedPlan,
    field_names: Sequence[str] = (),
    limits: PlanLimits = DEFAULT_LIMITS,
    in_process: bool = False,
) -> None:
    """Run ``plan`` on dummy batches of 1, 3 and 4 texts (:data:`DRY_RUN_SIZES`) with stub primitives.

    Each batch runs in the limited plan worker (:func:`~falconer_assets.plan.worker.run_plan_isolated`
    under ``limits``; ``in_process=True``: in this process, for tests), so a plan that loops, exhausts
    memory or crashes its process fails its dry run instead of the planner.  The stubs answer
    ``get_label`` with True, False, True, False, ... (as objects that refuse to be list indexes, so
    ``[texts[i] for i in flags]`` is caught) and ``get_span`` with one span per text (its first five
    characters), so no real model is called.  Catches NameErrors, wrong result shapes, spans put on
    the wrong document, and, when ``field_names`` is non-empty, result dicts with keys outside
    ``field_names`` (a plan may omit a field, e.g. when nothing was extracted, so missing keys are
    not an error).

    Raises:
        PlanRuntimeError: the plan crashed, hit a limit, returned a malformed result or used a field
            name not in ``field_names``, at some batch size (the message says which).
        falconer_assets.plan.worker.PlanWorkerError: the worker process cannot be started.
    """
    run = run_plan if in_process else run_plan_isolated
    allowed = set(field_names)
    for size in DRY_RUN_SIZES:
        try:
            results = run(plan, _DRY_TEXTS[:size], _stub_label, _stub_span, limits)
        except PlanRuntimeError as exc:
            hint = f" -- {_INDEX_HINT}" if "_StrictYesNo" in str(exc) else ""
            raise PlanRuntimeError(f"{exc} (dry run on {size} text{'s' * (size > 1)}){hint}") from exc
        if allowed:
            for i, item in enumerate(results):
                for key in item or {}:
                    if key not in allowed:
                        raise PlanRuntimeError(
                            f"result item {i} uses the field name {key!r}; the allowed field names "
                            f"are exactly: {', '.join(sorted(allowed))}")


def plan_with_retries(
    chat: Callable[[list[dict]], str],
    instruction: str,
    fields: Sequence[dict],
    max_attempts: int = 3,
    dry_run: bool = True,
) -> tuple[ValidatedPlan, list[PlanAttempt]]:
    """Ask the planner for a plan until one validates, feeding each error back to the LLM.

    Each attempt calls ``chat(build_planner_messages(instruction, fields, feedback))``, where
    ``feedback`` holds all earlier (reply, error) pairs, then :func:`extract_code`,
    :func:`~falconer_assets.plan.sandbox.validate_plan` and, if ``dry_run``,
    :func:`dry_run_plan` (stub primitives; checks the plan runs and uses only the given field
    names).

    Args:
        chat: ``messages -> reply text``; exceptions it raises (network, quota) propagate
            unchanged and are not retried here.
        instruction: the mining instruction.
        fields: output fields, ``[{"name": ..., "description": ...}]``.
        max_attempts: total number of LLM calls allowed, >= 1.
        dry_run: also execute the plan on dummy texts with stub primitives (:func:`dry_run_plan`,
            in the limited plan worker).

    Returns:
        ``(plan, attempts)``: the first accepted plan and every attempt made (the last one has
        ``error=None``).

    Raises:
        ValueError: ``max_attempts < 1`` or bad ``instruction``/``fields`` (see
            :func:`build_planner_messages`).
        PlanValidationError: every attempt failed; the message lists each attempt's error and
            the exception's ``attempts`` attribute holds the :class:`PlanAttempt` list.
        falconer_assets.plan.worker.PlanWorkerError: the dry run's worker process cannot be started.

    Source: paper section 3.4 (planner); error feedback follows self-debugging (Chen et al.
    2023, cited in section 2).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    fields = _check_fields(fields)
    field_names = [f["name"] for f in fields]
    attempts: list[PlanAttempt] = []
    for _ in range(max_attempts):
        feedback = [(a.reply, a.error) for a in attempts]
        reply = chat(build_planner_messages(instruction, fields, feedback))
        if not isinstance(reply, str):
            reply = "" if reply is None else str(reply)
        try:
            plan = validate_plan(extract_code(reply))
            if dry_run:
                dry_run_plan(plan, field_names)
        except (PlanValidationError, PlanRuntimeError) as e:
            attempts.append(PlanAttempt(reply=reply, error=str(e)))
            continue
        attempts.append(PlanAttempt(reply=reply, error=None))
        return plan, attempts
    summary = "\n".join(f"attempt {i}: {a.error}" for i, a in enumerate(attempts, 1))
    err = PlanValidationError(f"no valid plan after {len(attempts)} attempts:\n{summary}")
    err.attempts = attempts
    raise err
