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

import inspect
import io
import os
import re
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from falconer_assets.plan.limits import DEFAULT_LIMITS, FIELD_NAME_PATTERN, PlanLimits
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
    "PLANNER_SYSTEM_PROMPT_NO_EXAMPLES",
    "PLANNER_RETRY_TEMPERATURE",
    "EXAMPLE_PLAN",
    "PlanAttempt",
    "INFER_FIELDS_TEXT",
    "build_planner_messages",
    "extract_code",
    "DRY_RUN_SIZES",
    "dry_run_plan",
    "plan_with_retries",
    "plan_for_task",
    "rename_throwaway_names",
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

_EXAMPLE_BOOLEAN = """is_health = get_label(texts, "Is this talk about health?")
    is_brain = get_label(texts, "Is this talk about the brain?")
    both = [a and b for a, b in zip(is_health, is_brain)]
    talks = [i for i, ok in enumerate(both) if ok]"""

_EXAMPLE_QUERY = """def plan(texts):
    is_spam = get_label(texts, "Is this text message spam?")
    spam = [i for i, ok in enumerate(is_spam) if ok]
    numbers = get_span([texts[i] for i in spam], "What phone number does the message give?")
    results = [None] * len(texts)
    for i, spans in zip(spam, numbers):
        results[i] = {"phone": spans}
    return results"""

_EXAMPLE_MULTI_ENTITY = f"""def plan(texts):
    {_EXAMPLE_BOOLEAN}
    speakers = get_span([texts[i] for i in talks], "Who is the speaker of the talk?")
    titles = get_span([texts[i] for i in talks], "What is the title of the talk?")
    results = [None] * len(texts)
    for k, i in enumerate(talks):
        results[i] = {{"speaker": speakers[k], "title": titles[k]}}
    return results"""

_EXAMPLE_MULTI_STEP = """def plan(texts):
    lengths = get_span(texts, "How long is the talk?")
    long_talks = []
    for i, spans in enumerate(lengths):
        for s in spans:
            digits = "".join([c for c in s.text if c in "0123456789."])
            if digits and float(digits) > 15:
                long_talks.append(i)
                break
    titles = get_span([texts[i] for i in long_talks], "What is the title of the talk?")
    results = [None] * len(texts)
    for i, spans in zip(long_talks, titles):
        results[i] = {"title": spans}
    return results"""

_RULES = """You write a short Python function (a "plan") that mines information from a list of documents.

You can use exactly two tools, both already defined (do not import or define them):
- get_label(texts, instruction) -> list[bool]: answers a yes/no question for each text.
- get_span(texts, instruction) -> list[list[Span]]: extracts the answer spans for each text (a Span has .text, .start, .end).
Both take a list of strings and return a list of the same length, in the same order.

Rules:
1. Write exactly one function `def plan(texts):` where texts is a list of strings.
2. The instruction (second argument) must be a fixed English question in double quotes, e.g. "Is this a game?". Never build it from variables.
3. Use only plain Python: for loops, if, list comprehensions, len, range, enumerate, zip, any, all, float, int. No imports, no while loops, no try, no lambda, no print, no other functions, no names starting with "_".
4. Return a list with one item per text: None if the text is not wanted, otherwise a dict whose keys are exactly the output field names given by the user and whose values are the lists of spans returned by get_span (or a bool from get_label).
5. If the instruction only wants some of the texts (e.g. "games", "spam messages", "positive reviews"), first ask get_label whether each text qualifies, then call get_span only on the kept texts."""

_RULE_6_EXAMPLE = f"""
6. If a condition has several parts (e.g. "about both health and the brain"), ask one get_label question per part and combine them with and / or / not:
    {_EXAMPLE_BOOLEAN}"""

_RULE_6_PLAIN = """
6. If a condition has several parts (e.g. "about both health and the brain"), ask one get_label question per part and combine the answers with and / or / not."""

_RULES_TAIL = """
7. If the condition is about a value (a number, an amount, a size, a count, a name), extract the value with get_span first, then test each span's .text in Python (e.g. keep the digits and compare float(digits) > 15, or count the spans with len).
8. Reply with ONLY one ```python code block and nothing else."""

_EXAMPLES = f"""

Example 1 (extract from every text)
Instruction: Extract the speaker of each TED talk.
Output fields:
- speaker: the name of the speaker
```python
{_EXAMPLE_BASIC}
```

Example 2 (filter, then extract)
Instruction: Extract the phone numbers from spam text messages.
Output fields:
- phone: the phone number given in the message
```python
{_EXAMPLE_QUERY}
```

Example 3 (several conditions, several fields)
Instruction: Retrieve talks about both health and the brain, and extract their speakers and titles.
Output fields:
- speaker: the name of the speaker
- title: the title of the talk
```python
{_EXAMPLE_MULTI_ENTITY}
```

Example 4 (a condition on an extracted value)
Instruction: Extract the titles of talks longer than 15 minutes.
Output fields:
- title: the title of the talk
```python
{_EXAMPLE_MULTI_STEP}
```"""

#: The planner's system prompt with its in-context examples, one per category of the paper's Table 1
#: (Basic, Query-based, Multi-entity, multi-step), from domains (TED talks, text messages) that are not
#: those of the planning benchmark (``falconer_assets.bench.planning_cases``).
PLANNER_SYSTEM_PROMPT = _RULES + _RULE_6_EXAMPLE + _RULES_TAIL + _EXAMPLES

#: The planner's system prompt without any example code (the benchmark's "no examples" setting).
PLANNER_SYSTEM_PROMPT_NO_EXAMPLES = _RULES + _RULE_6_PLAIN + _RULES_TAIL


PLANNER_MAX_TOKENS = 768
"""Generated-token limit of one planner call (a plan is a few hundred tokens)."""

PLANNER_RETRY_TEMPERATURE = 0.7
"""Sampling temperature of a planner retry (attempt 2 on; the first is greedy): at temperature 0 a
small model repeats its rejected plan word for word despite the error fed back."""


def rename_throwaway_names(source: str) -> str:
    """``source`` with every variable named ``_`` (Python's throwaway name, refused by the sandbox like
    every name starting with ``_``) renamed to ``unused`` (``unused2``, ... if taken).

    Small models write ``for i, _ in enumerate(flags)`` and repeat it after the error is fed back; the
    renaming changes no behaviour (only whole name tokens are renamed, never text in strings, comments
    or attribute names like ``x._y``). A source that does not tokenize is returned unchanged (its
    validation reports the syntax error).
    """
    if "_" not in source:
        return source
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source
    names = {t.string for t in tokens if t.type == tokenize.NAME}
    hits = [t.start for i, t in enumerate(tokens) if t.type == tokenize.NAME and t.string == "_"
            and not (i and tokens[i - 1].type == tokenize.OP and tokens[i - 1].string == ".")]
    if not hits:
        return source
    new, k = "unused", 1
    while new in names:
        k += 1
        new = f"unused{k}"
    lines = source.splitlines(keepends=True)
    for row, col in sorted(hits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + new + line[col + 1:]
    return "".join(lines)


def _accepts_params(chat: Callable) -> bool:
    """True when ``chat`` can be called as ``chat(messages, temperature=..., seed=...)``."""
    try:
        params = inspect.signature(chat).parameters.values()
    except (TypeError, ValueError):
        return False
    names = {p.name for p in params}
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params) or {"temperature", "seed"} <= names


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


INFER_FIELDS_TEXT = (
    "Output fields: not given, choose them yourself: one short name per piece of information the "
    "instruction asks for, in lowercase letters, digits and _ (e.g. \"price\", \"speaker_name\"). "
    "Write these names as string literals as the keys of every returned dict.")
"""The task text's field part when the planner names the fields (``infer_fields``; ``falconer new``)."""


def build_planner_messages(
    instruction: str,
    fields: Sequence[dict],
    feedback: Sequence[tuple[str, str]] = (),
    infer_fields: bool = False,
    examples: bool = True,
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
        infer_fields: ask the planner to choose the output field names itself
            (:data:`INFER_FIELDS_TEXT`); ``fields`` must then be empty.
        examples: include the in-context examples (system prompt :data:`PLANNER_SYSTEM_PROMPT`);
            False: the rules only (:data:`PLANNER_SYSTEM_PROMPT_NO_EXAMPLES`).

    Returns:
        OpenAI-style ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``: the
        system prompt, the task, then the feedback turns.

    Raises:
        ValueError: empty instruction, a field without a non-empty str ``name``, duplicate
            field names, or fields given with ``infer_fields``.

    Source: paper section 3.4 (the planner decomposes the instruction into get_label/get_span
    sub-tasks with explicit control flow).
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("instruction must be a non-empty string")
    fields = _check_fields(fields)
    if infer_fields and fields:
        raise ValueError("infer_fields asks the planner to name the fields: give no fields with it")
    if infer_fields:
        field_text = INFER_FIELDS_TEXT
    elif fields:
        names = ", ".join(f'"{f["name"]}"' for f in fields)
        field_text = (f"Output fields:\n{_format_fields(fields)}\n"
                      f"Each returned dict must have exactly these keys: {names}.")
    else:
        field_text = "Output fields: none. Return an empty dict {} for each wanted text."
    task = (f"Instruction: {instruction.strip()}\n{field_text}\n\n"
            "Write the plan. Reply with only one ```python code block.")
    messages = [
        {"role": "system", "content": PLANNER_SYSTEM_PROMPT if examples else PLANNER_SYSTEM_PROMPT_NO_EXAMPLES},
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


_FIELD_NAME = re.compile(FIELD_NAME_PATTERN)


def _check_inferred_fields(names: Sequence[str]) -> None:
    """Raise :class:`PlanValidationError` (fed back to the planner) unless ``names``, the field names a plan
    writes, are at least one and each matches :data:`~falconer_assets.plan.limits.FIELD_NAME_PATTERN`."""
    if not names:
        raise PlanValidationError('the plan names no output field: write each field name as a string key of the '
                                  'returned dicts, e.g. results[i] = {"price": spans}')
    bad = [n for n in names if not _FIELD_NAME.fullmatch(n)]
    if bad:
        raise PlanValidationError(f"field name {bad[0]!r} is not allowed: use lowercase letters, digits and _, "
                                  f"starting with a letter (e.g. \"speaker_name\")")


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
            name not in ``field_names``, at some batch size (the message says which). Its ``dry_run_trace``
            attribute says what the failing run did (the primitive calls, with the number of texts and
            the question, and the result's shape), for the planner's feedback.
        falconer_assets.plan.worker.PlanWorkerError: the worker process cannot be started.
    """
    run = run_plan if in_process else run_plan_isolated
    allowed = set(field_names)
    for size in DRY_RUN_SIZES:
        calls: list[str] = []

        def label(texts, instruction, calls=calls):
            calls.append(f"get_label({len(texts)} text{'s' * (len(texts) != 1)}, {instruction!r})")
            return _stub_label(texts, instruction)

        def span(texts, instruction, calls=calls):
            calls.append(f"get_span({len(texts)} text{'s' * (len(texts) != 1)}, {instruction!r})")
            return _stub_span(texts, instruction)

        try:
            results = run(plan, _DRY_TEXTS[:size], label, span, limits)
        except PlanRuntimeError as exc:
            hint = f" -- {_INDEX_HINT}" if "_StrictYesNo" in str(exc) else ""
            err = PlanRuntimeError(f"{exc} (dry run on {size} text{'s' * (size > 1)}){hint}")
            err.dry_run_trace = _dry_run_trace(size, calls, None)
            raise err from exc
        trace = _dry_run_trace(size, calls, results)
        if allowed:
            for i, item in enumerate(results):
                for key in item or {}:
                    if key not in allowed:
                        err = PlanRuntimeError(
                            f"result item {i} uses the field name {key!r}; the allowed field names "
                            f"are exactly: {', '.join(sorted(allowed))}")
                        err.dry_run_trace = trace
                        raise err


def _dry_run_trace(size: int, calls: Sequence[str], results: Sequence[dict | None] | None) -> str:
    """What a dry run on ``size`` dummy texts did, for the planner's feedback (at most ~600 characters)."""
    shown = calls[:6] + ([f"... {len(calls) - 6} more calls"] if len(calls) > 6 else [])
    text = (f"Dry run on {size} dummy text{'s' * (size > 1)} (get_label answered True, False, True, ...; "
            f"get_span gave one span per text): the plan called "
            f"{', '.join(shown) if shown else 'no primitive'}")
    if results is not None:
        items = []
        for item in results:
            if item is None:
                items.append("None")
                continue
            items.append("{" + ", ".join(
                f"{k!r}: {v!r}" if isinstance(v, bool) else f"{k!r}: [{len(v)} span{'s' * (len(v) != 1)}]"
                for k, v in item.items()) + "}")
        text += f" and returned [{', '.join(items)}]"
    return text[:600] + "."


def plan_with_retries(
    chat: Callable[[list[dict]], str],
    instruction: str,
    fields: Sequence[dict],
    max_attempts: int = 3,
    dry_run: bool = True,
    infer_fields: bool = False,
    *,
    examples: bool = True,
    retry_temperature: float | None = PLANNER_RETRY_TEMPERATURE,
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
        infer_fields: the planner names the output fields (``fields`` must be empty; see
            :func:`build_planner_messages`): a plan is accepted only if it writes at least one field name
            literally (:attr:`~falconer_assets.plan.sandbox.ValidatedPlan.field_names`), each matching
            :data:`~falconer_assets.plan.limits.FIELD_NAME_PATTERN`, and its dry run uses no other key.
        examples: give the planner the in-context examples (see :func:`build_planner_messages`).
        retry_temperature: sampling temperature of the attempts after the first (which uses the
            chat's default, greedy for the embedded models), with ``seed`` = the attempt number, so a
            retry does not repeat a rejected greedy answer; applied only when ``chat`` accepts keyword
            parameters (``chat(messages, temperature=..., seed=...)``); None: never passed.

    Returns:
        ``(plan, attempts)``: the first accepted plan and every attempt made (the last one has
        ``error=None``). With ``infer_fields``, the fields are ``plan.field_names``.

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
    vary = retry_temperature is not None and _accepts_params(chat)
    for attempt in range(1, max_attempts + 1):
        feedback = [(a.reply, a.error) for a in attempts]
        messages = build_planner_messages(instruction, fields, feedback, infer_fields=infer_fields,
                                          examples=examples)
        if vary and attempt > 1:
            reply = chat(messages, temperature=float(retry_temperature), seed=attempt)
        else:
            reply = chat(messages)
        if not isinstance(reply, str):
            reply = "" if reply is None else str(reply)
        try:
            plan = validate_plan(rename_throwaway_names(extract_code(reply)))
            if infer_fields:
                field_names = list(plan.field_names)
                _check_inferred_fields(field_names)
            if dry_run:
                dry_run_plan(plan, field_names)
        except (PlanValidationError, PlanRuntimeError) as e:
            trace = getattr(e, "dry_run_trace", None)
            attempts.append(PlanAttempt(reply=reply, error=f"{e}\n{trace}" if trace else str(e)))
            continue
        attempts.append(PlanAttempt(reply=reply, error=None))
        return plan, attempts
    summary = "\n".join(f"attempt {i}: {a.error}" for i, a in enumerate(attempts, 1))
    err = PlanValidationError(f"no valid plan after {len(attempts)} attempts:\n{summary}")
    err.attempts = attempts
    raise err


def plan_for_task(
    task,
    chat: Callable[..., str],
    *,
    max_attempts: int = 3,
    examples: bool = True,
    overwrite: bool = True,
) -> tuple[str, dict]:
    """Plan ``task`` with the LLM and write the plan to ``<task>.plan.py`` beside its YAML, for editing.

    The written file is what the ``plan`` asset uses instead of the LLM planner from then on (a user's
    plan file), validated the same way. It holds a comment header (the instruction, the fields, how it
    was made, how to edit it) and the plan; comments do not change the plan's AST hash.

    Args:
        task: a loaded task (``falconer_assets.inputs.tasks.Task``; anything with ``name``,
            ``instruction``, ``fields_as_dicts()`` and ``plan_override_path``).
        chat: ``messages -> reply text`` (may accept ``temperature``/``seed`` keywords, see
            :func:`plan_with_retries`).
        max_attempts: LLM calls allowed, >= 1.
        examples: give the planner its in-context examples.
        overwrite: replace an existing plan file; False: raise FileExistsError instead.

    Returns:
        ``(source, report)``: the text written to the file, and ``{"path": str, "attempts": int,
        "errors": [str, ...] (the rejected attempts'), "sub_tasks": [[kind, question], ...],
        "ast_hash": str}``.

    Raises:
        FileExistsError: the plan file exists and ``overwrite`` is False (checked before any LLM call).
        PlanValidationError: no valid plan after ``max_attempts`` (nothing is written).
        ValueError: bad ``max_attempts``, instruction or fields.
        OSError: the file cannot be written.
    """
    path = Path(task.plan_override_path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    fields = task.fields_as_dicts()
    plan, attempts = plan_with_retries(chat, task.instruction, fields, max_attempts=max_attempts,
                                       examples=examples)
    field_lines = [f"#   {f['name']}: {f.get('description') or ''}".rstrip() for f in fields] or ["#   (none)"]
    header = "\n".join([
        f"# Plan of task {task.name!r}, written by the LLM planner in {len(attempts)} attempt(s).",
        f"# Instruction: {' '.join(task.instruction.split())}",
        "# Output fields:", *field_lines,
        "# Edit freely: while this file exists, `falconer run` uses it instead of asking the planner",
        "# (validated the same way); delete it to plan again. Only get_label/get_span and plain Python.",
    ])
    source = f"{header}\n{plan.source.rstrip()}\n"
    validate_plan(source)  # the header is comments only: a bug here must not write a broken file
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(source, encoding="utf-8")
    os.replace(tmp, path)
    report = {
        "path": str(path),
        "attempts": len(attempts),
        "errors": [a.error for a in attempts if a.error],
        "sub_tasks": [[c.kind, c.instruction] for c in plan.calls],
        "ast_hash": plan.ast_hash,
    }
    return source, report
