"""The escape bank: hostile plans, each with its exact outcome (issue 12, item 5).

An LLM writes plans, so a plan is treated as an attacker's code. Every case here is one attack:
escapes (imports in every form, dunder chains, format-string attribute access, generator frames,
tracebacks, classes, decorators, walrus, star-args), exhaustion (CPU loops, memory bombs), crashes of
CPython (five plans that overflow the C stack: SIGSEGV), inputs that crashed the validator (deep
nesting, huge numbers), abuse of the primitives and lying results (spans of another document, two
million copies of a span, SQL in a field name, garbage at batch sizes other than the dry run's).

Each case asserts exactly one outcome:

* ``rejected``: ``validate_plan`` raises ``PlanValidationError`` naming the problem, and the worker
  refuses the same source handed to it as an already "validated" plan (it never runs);
* ``contained``: the plan validates, runs in the limited worker (``run_plan_isolated`` under
  :data:`BANK_LIMITS`, the primitives served from this process) and fails with ``PlanRuntimeError``
  (``PlanLimitError`` with the expected ``limit`` where a limit is hit) naming the reason.

A case *escaped* if it ran to a result, wrote the canary file or raised anything else; a case that
crashed the run would have ended this process. ``test_bank_summary`` runs whatever did not run yet,
prints ``N cases: X rejected, Y contained, 0 escaped, 0 crashed the run`` and writes the per-case table
to ``<tempdir>/escape_bank_table.md`` (for ``docs/security.md``).

The bank's limits are tighter than the defaults (256 MiB, 2 s CPU instead of 1 GiB, 10 s) so that the
whole bank stays well under a minute on two shared cores; the defaults only move the point where the
same plans stop.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from falconer_assets.plan.limits import PlanLimits
from falconer_assets.plan.planner import dry_run_plan
from falconer_assets.plan.sandbox import (
    PlanLimitError,
    PlanRuntimeError,
    PlanValidationError,
    ValidatedPlan,
    validate_plan,
)
from falconer_assets.plan.worker import run_plan_isolated
from falconer_assets.spans import Span

BANK_LIMITS = PlanLimits(memory_mib=256, cpu_seconds=2, wall_seconds=30)
CANARY = Path(tempfile.gettempdir()) / f"falconer_escape_canary_{os.getpid()}"
TABLE = Path(tempfile.gettempdir()) / "escape_bank_table.md"
TEXTS = ["alpha one", "bravo two", "charlie three"]
#: The longest an error message of the bank may be (messages use a bounded repr).
MAX_MESSAGE_CHARS = 1200


def stub_label(texts, instruction):
    return [True] * len(texts)


def stub_span(texts, instruction):
    """The last word of each text."""
    return [[Span.of(t, t.rfind(" ") + 1, len(t))] for t in texts]


@dataclass(frozen=True)
class Case:
    """One hostile plan and its exact expected outcome."""

    name: str
    category: str
    source: str
    expect: str  # "rejected" | "contained"
    needle: str  # a substring of the error message
    limit: str | None = None  # PlanLimitError.limit, for contained cases that hit a limit
    how: str = "run"  # "run": run_plan_isolated on TEXTS; "dry_run": the planner's dry run


def plan(body: str, ret: str = "[None] * len(texts)") -> str:
    """A plan: one primitive call, ``body``, then ``return ret``."""
    body = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return f'def plan(texts):\n    labels = get_label(texts, "Is it?")\n{body}\n    return {ret}\n'


C = str(CANARY)
DEEP = {
    "250-term t + t + ...": plan("t = 1\nx = " + " + ".join(["t"] * 250)),
    "1,000 chained not": plan("x = " + "not " * 1000 + "texts"),
    "199 nested [": plan("x = " + "[" * 199 + "]" * 199),
    "600 chained if/else": plan("x = " + "1 if texts else " * 600 + "2"),
}


def rejected(name, category, source, needle):
    return Case(name, category, source, "rejected", needle)


def contained(name, category, source, needle, limit=None, how="run"):
    return Case(name, category, source, "contained", needle, limit, how)


CASES = [
    # --- imports in every form ---------------------------------------------------------------------
    rejected("import os", "import", plan(f"import os\nos.system('touch {C}')"), "line 3: Import statement is not allowed"),
    rejected("from os import system", "import", plan(f"from os import system\nsystem('touch {C}')"),
             "line 3: Import statement (from ... import) is not allowed"),
    rejected("import os.path as p", "import", plan("import os.path as p"), "Import statement is not allowed"),
    rejected("relative import", "import", plan("from . import sandbox"), "Import statement (from ... import)"),
    rejected("module-level import", "import", f"import os\n{plan('x = 1')}", "at module level is not allowed"),
    rejected("__import__('os')", "import", plan(f"__import__('os').system('touch {C}')"),
             "line 3: attribute 'system' is not allowed"),
    rejected("exec('import os')", "import", plan(f"exec('import os; os.system(\"touch {C}\")')"), "calling 'exec' is not allowed"),
    rejected("eval(...)", "import", plan("x = eval('1')"), "calling 'eval' is not allowed"),
    rejected("compile(...)", "import", plan("x = compile('1', 'f', 'eval')"), "calling 'compile' is not allowed"),
    rejected("open(canary, 'w')", "import", plan(f"open('{C}', 'w').write('x')"), "attribute 'write' is not allowed"),
    rejected("importlib by name", "import", plan("x = importlib.import_module('os')"), "attribute 'import_module' is not allowed"),
    # --- dunder chains -----------------------------------------------------------------------------
    rejected("().__class__.__bases__", "dunder", plan("x = ().__class__.__bases__[0].__subclasses__()"),
             "attributes starting with '_' are not allowed: '__subclasses__'"),
    rejected("texts.__class__.__mro__", "dunder", plan("x = texts.__class__.__mro__"), "attributes starting with '_'"),
    rejected("Span.__init__.__globals__", "dunder", plan("x = Span.__init__.__globals__['os']"),
             "attributes starting with '_' are not allowed: '__globals__'"),
    rejected("len.__self__", "dunder", plan("x = len.__self__.open"), "attribute 'open' is not allowed"),
    rejected("__builtins__['open']", "dunder", plan(f"__builtins__['open']('{C}', 'w')"),
             "only named functions and methods may be called, not a Subscript expression"),
    rejected("get_label.__globals__", "dunder", plan("x = get_label.__globals__"), "attributes starting with '_'"),
    # --- format-string attribute access ------------------------------------------------------------
    rejected("'{0.__class__}'.format", "format string", plan("x = '{0.__class__.__bases__}'.format(texts)"),
             "attribute 'format' is not allowed"),
    rejected("'{.__globals__}'.format_map", "format string", plan("x = '{a.__globals__}'.format_map({'a': len})"),
             "attribute 'format_map' is not allowed"),
    rejected("str.format(template, obj)", "format string", plan("x = str.format('{0.__class__}', texts)"),
             "attribute 'format' is not allowed"),
    rejected("f-string attribute", "format string", plan("x = f'{texts.__class__}'"),
             "attributes starting with '_' are not allowed: '__class__'"),
    rejected("f-string format spec attribute", "format string", plan("x = f'{texts!r:{texts.__class__}}'"),
             "attributes starting with '_'"),
    # --- generator frames and tracebacks -----------------------------------------------------------
    rejected("generator gi_frame", "frames", plan("g = (t for t in texts)\nx = g.gi_frame.f_back.f_globals"),
             "attribute 'f_globals' is not allowed"),
    rejected("generator gi_code", "frames", plan("g = (t for t in texts)\nx = g.gi_code"), "attribute 'gi_code' is not allowed"),
    rejected("generator send/throw", "frames", plan("g = (t for t in texts)\nx = g.throw(None)"), "attribute 'throw' is not allowed"),
    rejected("yield", "frames", plan("yield texts"), "Yield expression is not allowed"),
    rejected("try/except __traceback__", "tracebacks",
             plan("try:\n    x = texts[99]\nexcept IndexError as e:\n    f = e.__traceback__.tb_frame"), "Try statement is not allowed"),
    rejected("raise", "tracebacks", plan("raise ValueError(texts)"), "Raise statement is not allowed"),
    rejected("assert", "tracebacks", plan("assert texts"), "Assert statement is not allowed"),
    # --- classes, decorators, lambdas, nested functions ---------------------------------------------
    rejected("class", "classes", plan("class A:\n    pass"), "Class definition is not allowed"),
    rejected("type('A', (), {})", "classes", plan("A = type('A', (), {})"), "calling 'type' is not allowed"),
    rejected("object.__subclasses__", "classes", plan("x = object.__subclasses__()"), "attributes starting with '_' are not allowed: '__subclasses__'"),
    rejected("decorator on the plan", "decorators", "@get_label\n" + plan("x = 1"), "decorators are not allowed"),
    rejected("nested decorated function", "decorators", plan("@len\ndef helper(t):\n    return t"),
             "nested function definition 'helper' is not allowed"),
    rejected("lambda", "decorators", plan(f"f = lambda: open('{C}', 'w')"), "Lambda expression is not allowed"),
    # --- walrus and star-args -----------------------------------------------------------------------
    rejected("walrus in if", "walrus", plan("if (n := len(texts)):\n    pass"), "Walrus operator (:=) is not allowed"),
    rejected("walrus in comprehension", "walrus", plan("x = [(y := t) for t in texts]"), "Walrus operator (:=) is not allowed"),
    rejected("*args unpacking", "star-args", plan("x = max(*texts)"), "Starred expression (*x) is not allowed"),
    rejected("**kwargs unpacking", "star-args", plan("x = dict(**{'a': 1})"), "`**kwargs` unpacking is not allowed"),
    rejected("def plan(*texts)", "star-args", "def plan(*texts):\n    return get_label(texts, 'q?')\n",
             "must take exactly one plain positional parameter"),
    # --- other statements and names ------------------------------------------------------------------
    rejected("while True", "statements", plan("while True:\n    pass"), "While loop (unbounded; use `for ... in ...`) is not allowed"),
    rejected("global", "statements", plan("global x"), "Global statement is not allowed"),
    rejected("with open(...)", "statements", plan(f"with open('{C}', 'w') as f:\n    pass"), "With statement is not allowed"),
    rejected("del", "statements", plan("del texts"), "Delete statement is not allowed"),
    rejected("match", "statements", plan("match texts:\n    case _:\n        pass"), "Match node is not allowed"),
    rejected("async def", "statements", "async def plan(texts):\n    return get_label(texts, 'q?')\n", "Async function"),
    rejected("getattr(texts, '__class__')", "names", plan("x = getattr(texts, '__class__')"), "calling 'getattr' is not allowed"),
    rejected("globals()", "names", plan("x = globals()"), "calling 'globals' is not allowed"),
    rejected("breakpoint()", "names", plan("breakpoint()"), "calling 'breakpoint' is not allowed"),
    rejected("print(...)", "names", plan("print(texts)"), "calling 'print' is not allowed"),
    rejected("10 ** 10 ** 10", "names", plan("x = 10 ** 10 ** 10"), "Power operator (**) is not allowed"),
    rejected("1 << 10000000", "names", plan("x = 1 << 10000000"), "Shift operator (<<) is not allowed"),
    # --- a plan calling itself (no recursion at all) -------------------------------------------------
    rejected("key=plan via a comprehension target", "recursion",
             plan("x = [plan for plan in texts]\ny = sorted(texts, key=plan)"), "line 4: name 'plan' is not defined"),
    rejected("comprehension target read after the comprehension", "recursion",
             plan("x = [t for t in texts]\ny = t"), "line 4: name 't' is not defined"),
    rejected("plan in the first iterable of its own comprehension", "recursion",
             plan("x = [plan for plan in plan(texts)]"), "calling 'plan' is not allowed"),
    rejected("plan(texts)", "recursion", plan("x = plan(texts)"), "calling 'plan' is not allowed"),
    rejected("max(texts, key=plan)", "recursion", plan("x = max(texts, key=plan)"), "name 'plan' is not defined"),
    # --- inputs that crashed the validator with a raw exception -------------------------------------
    *[rejected(name, "validator crash", src, "levels deep, over the limit of 64") for name, src in DEEP.items()],
    rejected("8,000-digit int literal (hex)", "validator crash", plan("x = 0x" + "f" * 6700),
             "line 3: integer constant of 26800 bits is too large (at most 64 bits)"),
    rejected("8,000-digit int literal (decimal)", "validator crash", plan("x = " + "9" * 8000),
             "Exceeds the limit (4300 digits) for integer string conversion"),
    rejected("NUL byte in the source", "validator crash", plan("x = 1") + "\0", "null bytes"),
    rejected("source over 20,000 characters", "validator crash", plan("x = 1") + "#" * 20_000, "over the limit of 20000"),
    rejected("6,000 AST nodes", "validator crash", plan("x = [" + ", ".join(["1"] * 6000) + "]"), "AST nodes, over the limit of 5000"),
    # --- CPU loops ------------------------------------------------------------------------------------
    contained("for i in range(10**12)", "cpu", plan("for i in range(1000000000000):\n    pass"),
              "plan exceeded its 2 s CPU limit", "cpu"),
    contained("x = x * x", "cpu", plan("x = 3\nfor i in range(100):\n    x = x * x"), "plan exceeded its 2 s CPU limit", "cpu"),
    contained("nested loops", "cpu", plan("for a in range(100000):\n    for b in range(100000):\n        pass"),
              "plan exceeded its 2 s CPU limit", "cpu"),
    contained("sum(range(10**12)) in C", "cpu", plan("x = sum(range(1000000000000))"), "plan exceeded its 2 s CPU limit", "cpu"),
    # --- memory bombs -----------------------------------------------------------------------------------
    contained("[0] * 10**10", "memory", plan("x = [0] * 10000000000"), "plan exceeded its 256 MiB memory limit", "memory"),
    contained("'a' * 10**10", "memory", plan("x = 'a' * 10000000000"), "plan exceeded its 256 MiB memory limit", "memory"),
    contained("texts * 10**10", "memory", plan("x = texts * 10000000000"), "plan exceeded its 256 MiB memory limit", "memory"),
    contained("f\"{'a':>10000000000}\"", "memory", plan("x = f\"{'a':>10000000000}\""),
              "plan exceeded its 256 MiB memory limit", "memory"),
    contained("self-extending loop", "memory", plan("l = [1]\nfor x in l:\n    l.append(x)"),
              "plan exceeded its 256 MiB memory limit", "memory"),
    contained("string doubling", "memory", plan("s = 'ab'\nfor i in range(100):\n    s = s + s"),
              "plan exceeded its 256 MiB memory limit", "memory"),
    contained("nested comprehensions", "memory", plan("x = [[0] * 100000 for i in range(100000)]"),
              "plan exceeded its 256 MiB memory limit", "memory"),
    contained("list(range(10**10))", "memory", plan("x = list(range(10000000000))"),
              "plan exceeded its 256 MiB memory limit", "memory"),
    contained("dict comprehension of 10**8", "memory", plan("x = {i: i for i in range(100000000)}"),
              "plan exceeded its 256 MiB memory limit", "memory"),
    # --- plans that crash CPython (C stack overflow) ----------------------------------------------------
    contained("nested tuples as a dict key", "sigsegv", plan("x = ()\nfor i in range(1000000):\n    x = (x,)\nd = {x: 1}"),
              "plan process died with SIGSEGV", "crash"),
    contained("nested tuples as a set member", "sigsegv", plan("x = ()\nfor i in range(1000000):\n    x = (x, 1)\ns = {x}"),
              "plan process died with SIGSEGV", "crash"),
    contained("1M-level zip chain", "sigsegv", plan("x = texts\nfor i in range(1000000):\n    x = zip(x)\ny = list(x)"),
              "plan process died with SIGSEGV", "crash"),
    contained("1M-level enumerate chain", "sigsegv",
              plan("x = texts\nfor i in range(1000000):\n    x = enumerate(x)\ny = list(x)"),
              "plan process died with SIGSEGV", "crash"),
    contained("100k nested generator expressions", "sigsegv",
              plan("x = texts\nfor i in range(100000):\n    x = (a for a in x)\ny = list(x)"),
              "plan process died with SIGSEGV", "crash"),
    # --- deep data and huge numbers at run time ---------------------------------------------------------
    contained("str() of a 100k-deep list", "recursion", plan("x = []\nfor i in range(100000):\n    x = [x]\ny = str(x)"),
              "plan raised RecursionError at line 6 (`y = str(x)`)"),
    contained("== on 100k-deep tuples", "recursion",
              plan("x = ()\ny = ()\nfor i in range(100000):\n    x = (x,)\n    y = (y,)\nz = x == y"),
              "plan raised RecursionError at line 8 (`z = x == y`)"),
    contained("KeyError of an 8,000-digit int", "bounded message",
              plan("x = 10\nfor i in range(13):\n    x = x * x\ny = {}[x]"),
              "plan raised KeyError at line 6 (`y = {}[x]`): <unprintable KeyError>"),
    contained("int() of 5,000 digits", "bounded message", plan("x = int('9' * 5000)"),
              "plan raised ValueError at line 3 (`x = int('9' * 5000)`): Exceeds the limit (4300 digits)"),
    contained("KeyError of a 1 MB string", "bounded message", plan("y = {}['x' * 1000000]"),
              "plan raised KeyError at line 3 (`y = {}['x' * 1000000]`): 'xxxxxxxx"),
    # --- abuse of the primitives ------------------------------------------------------------------------
    contained("100,000 primitive calls", "primitive abuse", plan("for i in range(100000):\n    x = get_label([], 'Is it?')"),
              "plan exceeded its limit of 256 primitive calls per batch", "primitive_calls"),
    contained("100,000 primitive calls on the batch", "primitive abuse",
              plan("for i in range(100000):\n    x = get_label(texts, 'Is it?')"),
              "plan passed 195 texts (2015 characters) to the primitives, over its limit of 64x the batch", "primitive_input"),
    contained("texts * 100,000 to get_label", "primitive abuse", plan("x = get_label(texts * 100000, 'Is it?')"),
              "to the primitives, over its limit of 64x the batch", "primitive_input"),
    contained("100,000x longer texts to get_span", "primitive abuse", plan("x = get_span([t * 100000 for t in texts], 'Who?')"),
              "to the primitives, over its limit of 64x the batch", "primitive_input"),
    # --- lying results ------------------------------------------------------------------------------------
    contained("spans of document 1 returned for document 0", "results",
              plan("s = get_span(texts, 'Who?')", "[{'who': s[1]}, {'who': s[0]}, None]"),
              "result item 0 field 'who' span 0 'two' at [6, 9) does not match its document's text there ('one')"),
    contained("spans of a substring (offsets into another text)", "results",
              plan("s = get_span([t[6:] for t in texts], 'Who?')", "[{'who': x} for x in s]"),
              "result item 0 field 'who' span 0 'one' at [0, 3) does not match its document's text there ('alp')"),
    contained("a span past the end of its document", "results",
              plan("s = get_span([t + ' and more words' for t in texts], 'Who?')", "[{'who': x} for x in s]"),
              "result item 0 field 'who' span 0 [19, 24) lies outside its document (length 9)"),
    rejected("a Span made by the plan", "results", plan("s = Span(0, 5, 'hello')", "[{'who': [s]}, None, None]"),
             "line 3: calling 'Span' is not allowed"),
    contained("2,000,000 copies of a span", "results", plan("s = get_span(texts, 'Who?')", "[{'who': s[0] * 2000000}, None, None]"),
              "result item 0 has more than 1000 spans, the limit per document", "spans"),
    contained("field name ''", "results", plan("x = 1", "[{'': True}, None, None]"),
              "result item 0 has the field name '', which does not match [a-z][a-z0-9_]{0,63}"),
    contained("field name 'x; DROP TABLE mined'", "results", plan("x = 1", "[{'x; DROP TABLE mined': True}, None, None]"),
              "result item 0 has the field name 'x; DROP TABLE mined', which does not match"),
    contained("field name 'genre\\n'", "results", plan("x = 1", "[{'genre\\n': True}, None, None]"),
              "result item 0 has the field name 'genre\\n', which does not match"),
    contained("an 8,000-digit int as a field name", "results", plan("x = 10\nfor i in range(13):\n    x = x * x", "[{x: True}, None, None]"),
              "result item 0 has a non-str field name <int of 27214 bits> (int)"),
    contained("1,000 fields", "results", plan("d = {'f' + str(i): True for i in range(1000)}", "[d, None, None]"),
              "result item 0 has 1000 fields, over the limit of 64", "fields"),
    contained("a generator instead of a list", "results", plan("x = 1", "(None for t in texts)"),
              "the plan must return a list with one item per text, got generator"),
    contained("garbage only when the batch is not 4 texts", "results",
              plan("s = get_span(texts, 'Who?')",
                   "[{'who': sp} for sp in s] if len(texts) == 4 else [{'x; DROP TABLE mined': True}] * len(texts)"),
              "result item 0 has the field name 'x; DROP TABLE mined', which does not match [a-z][a-z0-9_]{0,63} "
              "(a lowercase identifier) (dry run on 1 text)", how="dry_run"),
]

OUTCOMES: dict[str, tuple[str, str, float]] = {}  # case name -> (outcome, message, seconds)


def run_case(case: Case) -> tuple[str, str]:
    """Run one case; return ``(outcome, message)``, outcome one of rejected / contained / escaped."""
    CANARY.unlink(missing_ok=True)
    outcome, message = "escaped", ""
    try:
        validate_plan(case.source)
    except PlanValidationError as exc:
        outcome, message = "rejected", str(exc)
        try:  # handed over as if validated, the worker still refuses to run it
            run_plan_isolated(ValidatedPlan(case.source, "plan", (), ""), TEXTS, stub_label, stub_span, BANK_LIMITS)
            outcome, message = "escaped", "the worker ran a plan that does not validate"
        except PlanValidationError:
            pass
    else:
        plan_ = validate_plan(case.source)
        try:
            if case.how == "dry_run":
                dry_run_plan(plan_, limits=BANK_LIMITS)
            else:
                run_plan_isolated(plan_, TEXTS, stub_label, stub_span, BANK_LIMITS)
            message = "ran to a result"
        except PlanLimitError as exc:
            outcome, message = ("contained", str(exc)) if exc.limit == case.limit else ("escaped", f"limit {exc.limit}: {exc}")
        except PlanRuntimeError as exc:
            outcome, message = ("contained", str(exc)) if case.limit is None else ("escaped", f"no limit hit: {exc}")
    if CANARY.exists():
        outcome, message = "escaped", f"the canary was written ({message})"
    return outcome, message


def _record(case: Case) -> tuple[str, str]:
    started = time.perf_counter()
    outcome, message = run_case(case)
    OUTCOMES[case.name] = (outcome, message, time.perf_counter() - started)
    return outcome, message


def test_bank_has_at_least_60_cases_with_unique_names():
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)
    assert {c.category for c in CASES} >= {"import", "dunder", "format string", "frames", "tracebacks", "classes",
                                           "decorators", "walrus", "star-args", "cpu", "memory", "sigsegv",
                                           "validator crash", "results"}
    assert sum(c.category == "sigsegv" for c in CASES) == 5


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_has_its_exact_outcome(case: Case):
    outcome, message = _record(case)
    assert (outcome, case.needle in message) == (case.expect, True), message
    assert len(message) <= MAX_MESSAGE_CHARS, f"unbounded message of {len(message)} characters"
    assert not CANARY.exists()


def test_bank_summary():
    """Every case's outcome (running those not run yet), the summary line and the markdown table."""
    started = time.perf_counter()
    for case in CASES:
        if case.name not in OUTCOMES:
            _record(case)
    counts = {k: sum(OUTCOMES[c.name][0] == k for c in CASES) for k in ("rejected", "contained", "escaped")}
    summary = (f"{len(CASES)} cases: {counts['rejected']} rejected, {counts['contained']} contained, "
               f"{counts['escaped']} escaped, 0 crashed the run")
    rows = ["| # | category | plan | expected | outcome | reason |", "|---|---|---|---|---|---|"]
    for i, case in enumerate(CASES, 1):
        outcome, message, _seconds = OUTCOMES[case.name]
        expected = case.expect + (f" ({case.limit})" if case.limit else "")
        reason = message if len(message) <= 110 else message[:107] + "..."
        cell = lambda s: s.replace("|", "\\|").replace("\n", "\\n").replace("`", "'")  # noqa: E731
        rows.append(f"| {i} | {case.category} | {cell(case.name)} | {expected} | {outcome} | {cell(reason)} |")
    limits = (f"Limits of the bank: {BANK_LIMITS.memory_mib} MiB, {BANK_LIMITS.cpu_seconds:g} s CPU, "
              f"{BANK_LIMITS.wall_seconds:g} s wall clock per batch; caps at their defaults.")
    TABLE.write_text(f"{summary}\n\n{limits}\n\n" + "\n".join(rows) + "\n", encoding="utf-8")
    print(f"\n{summary} (table: {TABLE}; {time.perf_counter() - started:.1f} s here)")
    assert counts["escaped"] == 0, [c.name for c in CASES if OUTCOMES[c.name][0] == "escaped"]
    assert all(OUTCOMES[c.name][0] == c.expect for c in CASES)
