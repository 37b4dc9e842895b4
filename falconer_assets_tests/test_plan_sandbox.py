"""Tests for falconer_assets.plan.sandbox: static allow-list and restricted execution."""

from __future__ import annotations

import textwrap

import pytest

from falconer_assets.plan.sandbox import (
    PlanRuntimeError,
    PlanValidationError,
    PrimitiveCall,
    ValidatedPlan,
    run_plan,
    validate_plan,
)
from falconer_assets.spans import Span

EXAMPLE = '''
def plan(texts):
    is_game = get_label(texts, "Is this package a game?")
    games = [i for i, ok in enumerate(is_game) if ok]
    genres = get_span([texts[i] for i in games], "What is the genre of the game?")
    results = [None] * len(texts)
    for i, spans in zip(games, genres):
        results[i] = {"genre": spans}
    return results
'''

BOTH = '''
def talks(texts):
    """Talks about both health and the brain, with their lecturers."""
    health = get_label(texts, "Is this talk about health?")
    brain = get_label(texts, "Is this talk about the brain?")
    keep = [i for i in range(len(texts)) if health[i] and brain[i]]
    lecturers = get_span([texts[i] for i in keep], "Who is the lecturer?")
    out = [None] * len(texts)
    for i, spans in zip(keep, lecturers):
        out[i] = {"lecturer": spans, "is_health": health[i]}
    # the brain check again, on purpose: must not be listed twice
    again = get_label(texts, "Is this talk about the brain?")
    return out
'''


def wrap(body: str) -> str:
    """A plan whose function body is ``body`` plus one primitive call."""
    return ("def plan(texts):\n    labels = get_label(texts, \"Is it?\")\n"
            + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n    return labels\n")


# --- test doubles for the primitives (deterministic, text-driven) -----------------------------

def fake_label(texts, instruction):
    if instruction == "Is this package a game?":
        return ["game" in t for t in texts]
    if instruction == "Is this talk about health?":
        return ["health" in t for t in texts]
    if instruction == "Is this talk about the brain?":
        return ["brain" in t for t in texts]
    raise AssertionError(f"unexpected instruction {instruction!r}")


def fake_span(texts, instruction):
    """Extract the word after 'genre:' / 'by' as the answer span."""
    key = {"What is the genre of the game?": "genre: ", "Who is the lecturer?": "by "}[instruction]
    out = []
    for t in texts:
        k = t.find(key)
        if k < 0:
            out.append([])
            continue
        start = k + len(key)
        end = t.find(" ", start)
        end = len(t) if end < 0 else end
        out.append([Span.of(t, start, end)])
    return out


# --- validation: accepted plans ---------------------------------------------------------------

def test_example_plan_is_accepted_with_calls_in_order():
    plan = validate_plan(EXAMPLE)
    assert isinstance(plan, ValidatedPlan)
    assert plan.func_name == "plan"
    assert plan.source == EXAMPLE
    assert plan.calls == (
        PrimitiveCall("label", "Is this package a game?"),
        PrimitiveCall("span", "What is the genre of the game?"),
    )
    assert len(plan.ast_hash) == 64


def test_boolean_plan_calls_are_distinct_and_in_source_order():
    plan = validate_plan(BOTH)
    assert plan.func_name == "talks"
    assert plan.calls == (
        PrimitiveCall("label", "Is this talk about health?"),
        PrimitiveCall("label", "Is this talk about the brain?"),
        PrimitiveCall("span", "Who is the lecturer?"),
    )
    assert plan.label_instructions == ("Is this talk about health?", "Is this talk about the brain?")
    assert plan.span_instructions == ("Who is the lecturer?",)


def test_calls_on_one_line_are_ordered_by_column():
    src = 'def plan(texts):\n    return [get_label(texts, "B?"), get_label(texts, "A?")]\n'
    assert [c.instruction for c in validate_plan(src).calls] == ["B?", "A?"]


def test_ast_hash_ignores_comments_whitespace_and_docstrings():
    base = validate_plan(EXAMPLE).ast_hash
    reformatted = '''"""Module docstring."""
def plan(texts):
    """Find games."""
    # classify first
    is_game = get_label( texts , "Is this package a game?" )   # trailing comment

    games = [i for i, ok in enumerate(is_game) if ok]
    genres = get_span([texts[i] for i in games],
                      "What is the genre of the game?")
    results = [None]*len(texts)
    for i, spans in zip(games, genres):
        results[i] = {"genre": spans}
    return results
'''
    assert validate_plan(reformatted).ast_hash == base


def test_ast_hash_changes_with_instruction():
    edited = EXAMPLE.replace("What is the genre of the game?", "What genre is the game?")
    assert validate_plan(edited).ast_hash != validate_plan(EXAMPLE).ast_hash


def test_allowed_constructs_validate():
    src = wrap('''
        names = []
        total = 0
        for i, t in enumerate(texts):
            if i > 2:
                break
            elif not t.strip():
                continue
            else:
                pass
            total += len(t.split())
            names.append(t.lower()[:10])
        d = {k: v for k, v in zip(names, range(3))}
        s = {x for x in names}
        g = sorted(names, reverse=True)
        y = max(len(t) for t in texts) if texts else 0
        z = f"{total} words, {len(d)!r}"
        w = d.get("a", 0) - -1 % 3 // 2 * 1.5
        n: int = 3
    ''')
    assert validate_plan(src).calls == (PrimitiveCall("label", "Is it?"),)


# --- validation: rejected plans ---------------------------------------------------------------

@pytest.mark.parametrize(
    "src, needle",
    [
        ("import os\n" + EXAMPLE, "Import"),
        ("from os import path\n" + EXAMPLE, "Import"),
        (wrap("import os"), "Import statement is not allowed"),
        (wrap("from os import path"), "Import statement"),
        (wrap("x = ().__class__.__bases__"), "'__bases__'"),
        (wrap("x = texts.__class__"), "'__class__'"),
        (wrap("f = open('f')"), "'open'"),
        (wrap("x = eval('1')"), "'eval'"),
        (wrap("exec('1')"), "'exec'"),
        (wrap("x = getattr(texts, 'y')"), "'getattr'"),
        (wrap("while True:\n    pass"), "While loop"),
        (wrap("f = lambda t: t"), "Lambda"),
        (wrap("q = 'Is it?'\nx = get_span(texts, q)"), "must be a string literal"),
        (wrap("x = get_span(texts, 'What' + '?')"), "must be a string literal"),
        (wrap("x = get_span(texts, f'What {1}?')"), "must be a string literal"),
        (wrap("x = get_span(texts)"), "exactly two positional arguments"),
        (wrap("x = get_span(texts, instruction='Who?')"), "exactly two positional arguments"),
        (wrap("x = get_span(texts, '  ')"), "must not be empty"),
        (wrap("f = get_span"), "may only be called directly"),
        (wrap("get_label = len"), "assigning to the builtin/primitive name 'get_label'"),
        (wrap("x = texts.format(1)"), "attribute 'format' is not allowed"),
        (wrap("texts.text = 1"), "assigning to attribute 'text'"),
        (wrap("_x = 1"), "names starting with '_'"),
        (wrap("x = __import__('os')"), "'__import__'"),
        (wrap("try:\n    pass\nexcept Exception:\n    pass"), "Try statement"),
        (wrap("raise ValueError('x')"), "Raise statement"),
        (wrap("with texts as t:\n    pass"), "With statement"),
        (wrap("global y"), "Global statement"),
        (wrap("del texts"), "Delete statement"),
        (wrap("x = [*texts]"), "Starred"),
        (wrap("if (n := len(texts)):\n    pass"), "Walrus"),
        (wrap("x = 10 ** 10"), "Power operator"),
        (wrap("def helper(t):\n    return t"), "nested function definition 'helper'"),
        (wrap("class A:\n    pass"), "Class definition"),
        (wrap("x = re.split(',', texts[0])"), "name 're' is not defined"),
        (wrap("print(texts)"), "calling 'print' is not allowed"),
        (wrap("x = texts[0](1)"), "only named functions and methods may be called"),
        (wrap("x = plan(texts)"), "calling 'plan' is not allowed"),
        (wrap("x = dict(**{})"), "**kwargs"),
        (wrap("x = b'bytes'"), "constant of type bytes"),
        ("def plan(texts):\n    return [None] * len(texts)\n", "no get_label/get_span call"),
        (EXAMPLE + "\ndef other(texts):\n    return get_label(texts, 'x?')\n",
         "exactly one top-level function, found 2"),
        ("x = 1\n" + EXAMPLE, "at module level is not allowed"),
        ("def plan(texts, other):\n    return get_label(texts, 'x?')\n", "exactly one plain positional"),
        ("def plan(*texts):\n    return get_label(texts, 'x?')\n", "exactly one plain positional"),
        ("def plan(texts=[]):\n    return get_label(texts, 'x?')\n", "exactly one plain positional"),
        ("@dec\ndef plan(texts):\n    return get_label(texts, 'x?')\n", "decorators"),
        ("async def plan(texts):\n    return get_label(texts, 'x?')\n", "Async function"),
        ("def plan(texts):\n    break\n    return get_label(texts, 'x?')\n", "'break' outside loop"),
        ("", "empty"),
    ],
)
def test_rejected_plans_name_the_problem(src, needle):
    with pytest.raises(PlanValidationError) as info:
        validate_plan(src)
    assert needle in str(info.value)


def test_syntax_error_names_the_line():
    src = "def plan(texts):\n    x = get_label(texts, 'a?')\n    return x +\n"
    with pytest.raises(PlanValidationError) as info:
        validate_plan(src)
    assert str(info.value).startswith("line 3: syntax error")
    assert info.value.lineno == 3


def test_rejection_message_names_the_line_of_the_construct():
    src = wrap("x = 1\ny = texts.__class__")
    with pytest.raises(PlanValidationError) as info:
        validate_plan(src)
    assert str(info.value).startswith("line 4:")
    # operator nodes have no line of their own (and are shared singletons): use the parent's
    src = wrap("x = 1 + 2\ny = 3 << 4\nz = 5 << 6")
    with pytest.raises(PlanValidationError) as info:
        validate_plan(src)
    assert str(info.value) == "line 4: Shift operator (<<) is not allowed"


def test_oversized_source_and_tree_are_rejected():
    with pytest.raises(PlanValidationError, match="over the limit"):
        validate_plan(EXAMPLE + "#" * 20_000)
    many = "[" + ", ".join(["1"] * 6000) + "]"
    with pytest.raises(PlanValidationError, match="AST nodes"):
        validate_plan(wrap(f"x = {many}"))


# --- execution --------------------------------------------------------------------------------

def test_run_example_plan_with_fake_primitives():
    texts = ["a game, genre: puzzle here", "a text editor", "another game genre: racing"]
    out = run_plan(validate_plan(EXAMPLE), texts, fake_label, fake_span)
    assert out == [
        {"genre": [Span(15, 21, "puzzle")]},
        None,
        {"genre": [Span(20, 26, "racing")]},
    ]


def test_run_boolean_plan_with_fake_primitives():
    texts = ["health and brain by Ada", "health only by Bob", "brain only by Cy", "health brain"]
    out = run_plan(validate_plan(BOTH), texts, fake_label, fake_span)
    assert out == [
        {"lecturer": [Span(20, 23, "Ada")], "is_health": True},
        None,
        None,
        {"lecturer": [], "is_health": True},
    ]


def test_run_plan_does_not_mutate_input_and_returns_fresh_list():
    src = wrap("texts.append('x')")
    texts = ["a"]
    run_plan(validate_plan(src.replace("return labels", "return [None]")), texts,
             lambda ts, q: [True] * len(ts), fake_span)
    assert texts == ["a"]


def test_empty_input_skips_primitives():
    def boom(texts, instruction):
        raise AssertionError("primitive should not be called on an empty list")
    assert run_plan(validate_plan(EXAMPLE), [], boom, boom) == []


@pytest.mark.parametrize(
    "ret, needle",
    [
        ("[None]", "returned 1 items for 2 texts"),
        ("'no'", "must return a list"),
        ("[None, 3]", "result item 1 is int"),
        ("[None, {'genre': 'rpg'}]", "result item 1 field 'genre' is str"),
        ("[{'genre': [1]}, None]", "result item 0 field 'genre'"),
        ("[None, {1: True}]", "result item 1 has a non-str field name"),
    ],
)
def test_bad_plan_results_raise_runtime_error_naming_the_index(ret, needle):
    src = f"def plan(texts):\n    x = get_label(texts, 'Is this package a game?')\n    return {ret}\n"
    with pytest.raises(PlanRuntimeError) as info:
        run_plan(validate_plan(src), ["a", "b"], fake_label, fake_span)
    assert needle in str(info.value)


def test_exception_in_plan_becomes_runtime_error():
    src = wrap("x = texts[99]")
    with pytest.raises(PlanRuntimeError) as info:
        run_plan(validate_plan(src), ["a"], lambda ts, q: [True] * len(ts), fake_span)
    assert str(info.value).startswith("plan raised IndexError at line 3 (`x = texts[99]`): ")
    assert isinstance(info.value.__cause__, IndexError)


def test_primitive_returning_wrong_length_is_caught():
    with pytest.raises(PlanRuntimeError, match="returned 1 labels for 2 texts"):
        run_plan(validate_plan(EXAMPLE), ["a", "b"], lambda ts, q: [True], fake_span)
    with pytest.raises(PlanRuntimeError, match="returned 0 span lists for 2 texts"):
        run_plan(validate_plan(EXAMPLE), ["game a", "game b"], fake_label, lambda ts, q: [])


def test_primitive_returning_wrong_types_is_caught():
    with pytest.raises(PlanRuntimeError, match="item 0 is int, not bool"):
        run_plan(validate_plan(EXAMPLE), ["a"], lambda ts, q: [1], fake_span)
    with pytest.raises(PlanRuntimeError, match="item 0 is not a list of Span"):
        run_plan(validate_plan(EXAMPLE), ["game"], fake_label, lambda ts, q: [["x"]])


def test_primitive_given_a_string_instead_of_a_list_is_caught():
    src = "def plan(texts):\n    return [get_label(t, 'Is it?') for t in texts]\n"
    with pytest.raises(PlanRuntimeError, match="expects a list of texts"):
        run_plan(validate_plan(src), ["a"], lambda ts, q: [True] * len(ts), fake_span)


def test_builtins_hold_only_safe_names():
    seen = {}

    def spy_label(texts, instruction):
        # the primitive's caller frame is the plan; its globals are the plan namespace
        import sys
        seen.update(sys._getframe(2).f_globals)
        return [True] * len(texts)

    src = "def plan(texts):\n    return [None for ok in get_label(texts, 'Is it?')]\n"
    run_plan(validate_plan(src), ["a"], spy_label, fake_span)
    builtins_ns = seen["__builtins__"]
    assert isinstance(builtins_ns, dict)
    assert "open" not in builtins_ns and "__import__" not in builtins_ns and "eval" not in builtins_ns
    assert {"len", "get_label", "get_span", "Span"} <= set(builtins_ns)


def test_run_plan_revalidates_hand_built_plans():
    evil = ValidatedPlan(source="import os\ndef plan(texts):\n    return []\n",
                         func_name="plan", calls=(), ast_hash="x")
    with pytest.raises(PlanValidationError, match="Import"):
        run_plan(evil, ["a"], fake_label, fake_span)


# --- scopes, nesting, huge numbers, bounded messages (issue 12) -------------------------------

def test_comprehension_targets_are_visible_only_inside_their_comprehension():
    ok = wrap('''
        words = [[w for w in t.split() if w] for t in texts]
        pairs = {(a, b) for a in texts for b in a.split()}
        d = {k: v for k, v in zip(texts, range(len(texts))) if k and v >= 0}
        g = sorted(texts, key=len)
        for i in range(len(texts)):
            last = i
        after = last
    ''')
    validate_plan(ok)
    for body, name in [("x = [t for t in texts]\ny = t", "t"),
                       ("x = [plan for plan in texts]\ny = sorted(texts, key=plan)", "plan"),
                       ("x = {k: 1 for k in texts}\ny = k", "k"),
                       ("x = [a for a in a]", "a")]:  # the first iterable is read in the enclosing scope
        with pytest.raises(PlanValidationError, match=f"name '{name}' is not defined"):
            validate_plan(wrap(body))


def test_plan_cannot_reach_itself_at_run_time():
    # even a plan that slipped past the validator would find no global of its own name
    from falconer_assets.plan.sandbox import load_plan_function
    func, _ = load_plan_function(validate_plan(EXAMPLE))
    assert "plan" not in func.__globals__


@pytest.mark.parametrize("body, needle", [
    ("t = 1\nx = " + " + ".join(["t"] * 250), "line 4: plan is nested 254 levels deep, over the limit of 64"),
    ("x = " + "not " * 1000 + "texts", "plan is nested 1005 levels deep"),
    ("x = " + "[" * 199 + "]" * 199, "plan is nested 203 levels deep"),
    ("x = " + "1 if texts else " * 600 + "2", "plan is nested 605 levels deep"),
    ("x = 0x" + "f" * 6700, "line 3: integer constant of 26800 bits is too large (at most 64 bits)"),
])
def test_deep_or_huge_plans_are_validation_errors_not_crashes(body, needle):
    with pytest.raises(PlanValidationError) as info:
        validate_plan(wrap(body))
    assert needle in str(info.value)


def test_unexpected_validator_failures_are_wrapped(monkeypatch):
    import falconer_assets.plan.sandbox as sandbox

    def explode(source):
        raise RecursionError("deep")

    monkeypatch.setattr(sandbox, "_validate", explode)
    with pytest.raises(PlanValidationError, match="nested too deeply"):
        sandbox.validate_plan("def plan(texts):\n    return get_label(texts, 'other?')\n")


def test_bounded_repr_and_str_never_raise_and_stay_short():
    from falconer_assets.plan.sandbox import bounded_repr, bounded_str
    huge = 10 ** 8000
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert bounded_repr(huge) == f"<int of {huge.bit_length()} bits>"
    assert len(bounded_repr("x" * 10**6)) == 200 and "..." in bounded_repr("x" * 10**6)
    assert bounded_repr(deep) == "[[[[...]]]]"
    assert bounded_str(KeyError(huge)) == "<unprintable KeyError>"
    assert len(bounded_str(KeyError("y" * 10**6))) == 400


def test_in_process_results_are_checked_against_their_own_documents():
    swap = "def plan(texts):\n    s = get_span(texts, 'What is the genre of the game?')\n    return [{'genre': s[1]}, {'genre': s[0]}]\n"
    texts = ["a game, genre: puzzle here", "another game genre: racing"]
    with pytest.raises(PlanRuntimeError, match=r"result item 0 field 'genre' span 0 'racing' at \[20, 26\) does not match"):
        run_plan(validate_plan(swap), texts, fake_label, fake_span)
    for key in ("", "x; DROP TABLE mined", "genre\n", "Genre", "g" * 65):
        src = f"def plan(texts):\n    x = get_label(texts, 'Is it?')\n    return [{{{key!r}: True}}]\n"
        with pytest.raises(PlanRuntimeError, match="which does not match"):
            run_plan(validate_plan(src), ["a"], lambda ts, q: [True] * len(ts), fake_span)


def test_in_process_caps_on_primitives_spans_and_fields():
    from falconer_assets.plan.limits import PlanLimits
    from falconer_assets.plan.sandbox import PlanLimitError
    small = PlanLimits(max_primitive_calls=3, max_primitive_input=2, max_spans_per_doc=2, max_fields_per_doc=1)
    label = lambda ts, q: [True] * len(ts)  # noqa: E731
    calls = wrap("for i in range(4):\n    x = get_label([], 'Is it?')")
    with pytest.raises(PlanLimitError, match="limit of 3 primitive calls") as info:
        run_plan(validate_plan(calls), ["a"], label, fake_span, small)
    assert info.value.limit == "primitive_calls"
    with pytest.raises(PlanLimitError, match="over its limit of 2x the batch") as info:
        run_plan(validate_plan(wrap("x = get_label(texts + texts, 'Is it?')")), ["a"], label, fake_span, small)
    assert info.value.limit == "primitive_input"
    spans = "def plan(texts):\n    s = get_span(texts, 'Who is the lecturer?')\n    return [{'a': s[0] * 3}]\n"
    with pytest.raises(PlanLimitError, match="more than 2 spans") as info:
        run_plan(validate_plan(spans), ["by Ada"], label, fake_span, small)
    assert info.value.limit == "spans"
    fields = "def plan(texts):\n    x = get_label(texts, 'Is it?')\n    return [{'a': True, 'b': False}]\n"
    with pytest.raises(PlanLimitError, match="2 fields, over the limit of 1") as info:
        run_plan(validate_plan(fields), ["a"], label, fake_span, small)
    assert info.value.limit == "fields"
