"""Static validation and restricted execution of planner-written plans (untrusted code).

The planner (paper section 3.4, "Planning"; sample code in Figure 1 / Appendix E) turns a
natural-language mining instruction into a short Python function that composes exactly two
primitives, ``get_label(texts, instruction) -> list[bool]`` and
``get_span(texts, instruction) -> list[list[Span]]``, with plain control flow and Boolean
logic.  The plan is written by an LLM, so it is treated as untrusted:

1. :func:`validate_plan` parses it and checks the AST against an allow-list *before* any of it
   runs.  Only a small subset of Python is admitted (no imports, no ``while``, no ``try``, no
   lambdas or nested functions, no names or attributes starting with ``_``, calls only to the
   two primitives, a few safe builtins and a few allow-listed methods).  Every primitive call
   must pass its instruction as a string literal, so the set of sub-tasks (the things the
   annotator LLM labels and the proxy model is trained on) is known statically.
2. :func:`run_plan` re-validates, executes the module in a fresh namespace whose
   ``__builtins__`` holds only the safe builtins, wraps the primitives to check what they
   return, and checks the shape of the plan's result.

This is defence in depth, **not** a perfect sandbox: CPU and memory exhaustion are not
prevented (``[0] * 10000000000`` or ``for i in range(10**12)`` written as literals will still
run until the process dies or the caller's own timeout fires).  ``**`` and shifts are rejected
only because they make such bombs trivially short.  Run plans in a worker process with resource
limits if the planner is not trusted at all.
"""

from __future__ import annotations

import ast
import builtins
import copy
import hashlib
import traceback
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from falconer_assets.spans import Span

__all__ = [
    "MAX_SOURCE_CHARS",
    "MAX_AST_NODES",
    "PRIMITIVES",
    "SAFE_BUILTIN_NAMES",
    "ALLOWED_ATTRIBUTES",
    "PlanValidationError",
    "PlanRuntimeError",
    "PrimitiveCall",
    "ValidatedPlan",
    "validate_plan",
    "run_plan",
]

#: Longest plan source accepted, in characters.
MAX_SOURCE_CHARS = 20_000
#: Most AST nodes accepted (a 20k-character plan of ordinary code has well under this).
MAX_AST_NODES = 5_000

#: The two primitives of the paper (section 1 / 3.4): classification and span extraction.
PRIMITIVES = ("get_label", "get_span")

#: Builtins a plan may call; these (and only these) are in the plan's ``__builtins__``.
SAFE_BUILTIN_NAMES = (
    "len", "range", "enumerate", "zip", "list", "dict", "set", "tuple", "str", "int",
    "float", "bool", "sorted", "min", "max", "sum", "any", "all", "abs", "round", "reversed",
)

#: Attribute names a plan may read (list/dict/str methods and the Span fields).
ALLOWED_ATTRIBUTES = frozenset({
    "append", "extend", "items", "keys", "values", "get", "lower", "upper", "strip", "split",
    "join", "startswith", "endswith", "replace", "text", "start", "end", "score", "count",
    "index",
})

#: Names rejected outright even though most are absent from the plan's builtins anyway,
#: so the LLM gets a clear message instead of a NameError at run time.
FORBIDDEN_NAMES = frozenset({
    "exec", "eval", "compile", "open", "__import__", "globals", "locals", "vars", "getattr",
    "setattr", "delattr", "dir", "input", "breakpoint", "help", "exit", "quit", "memoryview",
    "type", "object", "super", "classmethod", "staticmethod", "property",
})

# Names visible to a plan besides its own parameter and locals.
_PROVIDED_NAMES = frozenset(SAFE_BUILTIN_NAMES) | frozenset(PRIMITIVES) | {"Span"}
_CALLABLE_NAMES = frozenset(SAFE_BUILTIN_NAMES) | frozenset(PRIMITIVES)

_ALLOWED_NODES: tuple[type, ...] = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign,
    ast.AugAssign, ast.AnnAssign, ast.For, ast.If, ast.Expr, ast.Pass, ast.Break,
    ast.Continue, ast.Call, ast.keyword, ast.Name, ast.Load, ast.Store, ast.Constant,
    ast.List, ast.Tuple, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp,
    ast.GeneratorExp, ast.comprehension, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare,
    ast.Subscript, ast.Slice, ast.IfExp, ast.Attribute, ast.JoinedStr, ast.FormattedValue,
    # operators
    ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Invert,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod,
    ast.BitAnd, ast.BitOr, ast.BitXor,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
)
# Why some familiar nodes are missing: While (unbounded loop), Pow/LShift/RShift (one-token
# bignum bombs), MatMult (unused), Starred (``*args`` unpacking hides call arity),
# NamedExpr (walrus), Lambda/nested FunctionDef (callables the call check cannot see through),
# Import*, With, Try, Raise, Assert, Delete, Global, Nonlocal, ClassDef, Await, Yield*, Match.

_CONSTANT_TYPES = (str, int, float, bool, type(None))


class PlanValidationError(ValueError):
    """A plan failed static validation (or could not be extracted from a planner reply).

    The message starts with ``line N:`` when a line is known and names the offending construct,
    so it can be fed back to the planner LLM verbatim.  ``lineno`` holds the line (or None).
    """

    def __init__(self, message: str, lineno: int | None = None):
        self.lineno = lineno
        super().__init__(f"line {lineno}: {message}" if lineno is not None else message)


class PlanRuntimeError(RuntimeError):
    """A validated plan failed while running, or returned something outside the plan contract.

    Raised by :func:`run_plan`; the message names the exception type and text, or the index of
    the offending result item.  The original exception, if any, is chained as ``__cause__``.
    """


@dataclass(frozen=True)
class PrimitiveCall:
    """One statically known sub-task of a plan.

    Attributes:
        kind: ``"label"`` for ``get_label`` (classification), ``"span"`` for ``get_span``.
        instruction: the literal instruction string passed as the second argument.
    """

    kind: Literal["label", "span"]
    instruction: str


@dataclass(frozen=True)
class ValidatedPlan:
    """A plan that passed :func:`validate_plan`.

    Attributes:
        source: the plan source exactly as given.
        func_name: name of the single top-level function.
        calls: distinct primitive calls in source order (line, then column).
        ast_hash: hex sha256 of ``ast.dump`` of the tree with docstrings removed; comments,
            whitespace and docstrings do not change it, any code change (e.g. an instruction
            string) does.  Use it as a cache key for annotations / trained proxies.
    """

    source: str
    func_name: str
    calls: tuple[PrimitiveCall, ...]
    ast_hash: str

    @property
    def label_instructions(self) -> tuple[str, ...]:
        """Instructions of the ``get_label`` calls, in source order."""
        return tuple(c.instruction for c in self.calls if c.kind == "label")

    @property
    def span_instructions(self) -> tuple[str, ...]:
        """Instructions of the ``get_span`` calls, in source order."""
        return tuple(c.instruction for c in self.calls if c.kind == "span")


def _describe(node: ast.AST) -> str:
    """Readable name of a node type for error messages, e.g. ``While loop``."""
    names = {
        ast.Import: "Import statement", ast.ImportFrom: "Import statement (from ... import)",
        ast.While: "While loop (unbounded; use `for ... in ...`)",
        ast.Lambda: "Lambda expression", ast.Try: "Try statement", ast.Raise: "Raise statement",
        ast.With: "With statement", ast.ClassDef: "Class definition",
        ast.Global: "Global statement", ast.Nonlocal: "Nonlocal statement",
        ast.Delete: "Delete statement", ast.Starred: "Starred expression (*x)",
        ast.NamedExpr: "Walrus operator (:=)", ast.Assert: "Assert statement",
        ast.Pow: "Power operator (**)", ast.LShift: "Shift operator (<<)",
        ast.RShift: "Shift operator (>>)", ast.Await: "Await expression",
        ast.Yield: "Yield expression", ast.YieldFrom: "Yield expression",
        ast.AsyncFunctionDef: "Async function", ast.AsyncFor: "Async for loop",
        ast.AsyncWith: "Async with statement",
    }
    return names.get(type(node), f"{type(node).__name__} node")


def _strip_docstrings(tree: ast.Module) -> ast.Module:
    """Return a copy of ``tree`` without module/function docstring statements."""
    tree = copy.deepcopy(tree)
    for holder in [tree] + [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        body = holder.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            holder.body = body[1:] or [ast.Pass()]
    return tree


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
        and isinstance(stmt.value.value, str)


def validate_plan(source: str) -> ValidatedPlan:
    """Statically check a plan against the allow-list and list its primitive calls.

    Args:
        source: Python source of a module holding exactly one top-level
            ``def <name>(texts):`` (an optional module docstring is allowed).

    Returns:
        A :class:`ValidatedPlan` with the distinct ``get_label``/``get_span`` calls in source
        order and an ``ast_hash`` insensitive to comments, whitespace and docstrings.

    Raises:
        PlanValidationError: on a syntax error, a source over :data:`MAX_SOURCE_CHARS` or a tree
            over :data:`MAX_AST_NODES`, not exactly one top-level function with one plain
            positional parameter, any node type outside the allow-list, a name or attribute
            starting with ``_``, a forbidden/undefined name, rebinding a builtin or primitive,
            a call to anything but the primitives / safe builtins / allow-listed methods, a
            primitive call without exactly two positional arguments and a non-empty string
            literal instruction, or no primitive call at all.  The message names the line and
            the construct.

    Source: paper section 3.4 (plans compose ``get_label``/``get_span`` with explicit control
    flow); the static-instruction rule makes the sub-task set known before execution.
    """
    if not isinstance(source, str):
        raise PlanValidationError(f"plan source must be a str, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise PlanValidationError(
            f"plan source is {len(source)} characters, over the limit of {MAX_SOURCE_CHARS}")
    if not source.strip():
        raise PlanValidationError("plan source is empty")
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as e:  # includes IndentationError
        raise PlanValidationError(f"syntax error: {e.msg}", e.lineno) from None
    except (ValueError, MemoryError, RecursionError) as e:  # e.g. NUL bytes, absurd nesting
        raise PlanValidationError(f"cannot parse plan: {e}") from None

    n_nodes = sum(1 for _ in ast.walk(tree))
    if n_nodes > MAX_AST_NODES:
        raise PlanValidationError(f"plan has {n_nodes} AST nodes, over the limit of {MAX_AST_NODES}")

    # --- top level: [docstring] + exactly one FunctionDef -------------------------------------
    body = list(tree.body)
    if body and _is_docstring(body[0]):
        body = body[1:]
    funcs = [s for s in body if isinstance(s, ast.FunctionDef)]
    others = [s for s in body if not isinstance(s, ast.FunctionDef)]
    if others:
        s = others[0]
        raise PlanValidationError(
            f"{_describe(s)} at module level is not allowed; the plan must contain exactly one "
            "top-level function and nothing else", s.lineno)
    if len(funcs) != 1:
        raise PlanValidationError(
            f"the plan must define exactly one top-level function, found {len(funcs)}",
            funcs[1].lineno if len(funcs) > 1 else None)
    func = funcs[0]
    if func.decorator_list:
        raise PlanValidationError("decorators are not allowed", func.decorator_list[0].lineno)
    a = func.args
    if (a.posonlyargs or a.kwonlyargs or a.vararg or a.kwarg or a.defaults or a.kw_defaults
            or len(a.args) != 1):
        raise PlanValidationError(
            f"function {func.name!r} must take exactly one plain positional parameter "
            "(the list of texts), e.g. `def plan(texts):`", func.lineno)
    param = a.args[0].arg

    # --- allow-list walk ----------------------------------------------------------------------
    stored: set[str] = {param}
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            stored.add(node.id)

    primitive_calls: list[tuple[int, int, PrimitiveCall]] = []
    callee_ids: set[int] = set()  # ids of Name/Attribute nodes that are the func of a Call
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee_ids.add(id(node.func))

    for node, line in _walk_with_lines(tree):
        if isinstance(node, ast.FunctionDef) and node is not func:
            raise PlanValidationError(
                f"nested function definition {node.name!r} is not allowed", line)
        if not isinstance(node, _ALLOWED_NODES):
            raise PlanValidationError(f"{_describe(node)} is not allowed", line)

        if isinstance(node, (ast.FunctionDef, ast.arg)):
            ident = node.name if isinstance(node, ast.FunctionDef) else node.arg
            if ident.startswith("_"):
                raise PlanValidationError(
                    f"names starting with '_' are not allowed: {ident!r}", line)
            if ident in FORBIDDEN_NAMES or ident in _PROVIDED_NAMES:
                raise PlanValidationError(
                    f"{ident!r} is a reserved name and cannot be used as a "
                    f"{'function' if isinstance(node, ast.FunctionDef) else 'parameter'} name", line)

        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, _CONSTANT_TYPES):
                raise PlanValidationError(
                    f"constant of type {type(node.value).__name__} is not allowed", line)

        elif isinstance(node, ast.comprehension):
            if node.is_async:
                raise PlanValidationError("async comprehensions are not allowed", line)

        elif isinstance(node, ast.keyword):
            if node.arg is None:
                raise PlanValidationError("`**kwargs` unpacking is not allowed", line)
            if node.arg.startswith("_"):
                raise PlanValidationError(
                    f"keyword arguments starting with '_' are not allowed: {node.arg!r}", line)

        elif isinstance(node, ast.Name):
            ident = node.id
            if ident.startswith("_"):
                raise PlanValidationError(f"names starting with '_' are not allowed: {ident!r}", line)
            if ident in FORBIDDEN_NAMES:
                raise PlanValidationError(f"use of {ident!r} is not allowed", line)
            if isinstance(node.ctx, ast.Store):
                if ident in _PROVIDED_NAMES:
                    raise PlanValidationError(
                        f"assigning to the builtin/primitive name {ident!r} is not allowed", line)
            else:
                if ident in PRIMITIVES and id(node) not in callee_ids:
                    raise PlanValidationError(
                        f"{ident} may only be called directly (e.g. `{ident}(texts, \"...\")`), "
                        "not used as a value", line)
                if ident not in _PROVIDED_NAMES and ident not in stored:
                    raise PlanValidationError(
                        f"name {ident!r} is not defined (no imports or outside names; available: "
                        f"get_label, get_span and the builtins {', '.join(SAFE_BUILTIN_NAMES)})",
                        line)

        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise PlanValidationError(
                    f"attributes starting with '_' are not allowed: {node.attr!r}", line)
            if node.attr not in ALLOWED_ATTRIBUTES:
                raise PlanValidationError(
                    f"attribute {node.attr!r} is not allowed (allowed: "
                    f"{', '.join(sorted(ALLOWED_ATTRIBUTES))})", line)
            if not isinstance(node.ctx, ast.Load):
                raise PlanValidationError(
                    f"assigning to attribute {node.attr!r} is not allowed", line)

        elif isinstance(node, ast.Call):
            callee = node.func
            if isinstance(callee, ast.Name):
                if callee.id not in _CALLABLE_NAMES:
                    raise PlanValidationError(
                        f"calling {callee.id!r} is not allowed (callable: get_label, get_span, "
                        f"{', '.join(SAFE_BUILTIN_NAMES)} and allow-listed methods)", line)
                if callee.id in PRIMITIVES:
                    primitive_calls.append(
                        (node.lineno, node.col_offset, _check_primitive_call(node, callee.id)))
            elif isinstance(callee, ast.Attribute):
                pass  # attribute name checked by the Attribute branch
            else:
                raise PlanValidationError(
                    f"only named functions and methods may be called, not a "
                    f"{type(callee).__name__} expression", line)

    if not primitive_calls:
        raise PlanValidationError(
            "the plan makes no get_label/get_span call; every plan must use at least one "
            "primitive")

    # compile() catches what ast.parse lets through (e.g. `break` outside a loop).
    try:
        compile(tree, "<plan>", "exec")
    except SyntaxError as e:
        raise PlanValidationError(f"syntax error: {e.msg}", e.lineno) from None

    calls: list[PrimitiveCall] = []
    for _, _, call in sorted(primitive_calls, key=lambda t: (t[0], t[1])):
        if call not in calls:
            calls.append(call)
    digest = hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode("utf-8")).hexdigest()
    return ValidatedPlan(source=source, func_name=func.name, calls=tuple(calls), ast_hash=digest)


def _walk_with_lines(tree: ast.AST):
    """Yield ``(node, line)`` depth-first in source order; nodes without a line number
    (operators, contexts -- shared singletons in CPython) get their parent's line."""
    stack: list[tuple[ast.AST, int | None]] = [(tree, None)]
    while stack:
        node, parent_line = stack.pop()
        line = getattr(node, "lineno", None) or parent_line
        yield node, line
        stack.extend((child, line) for child in reversed(list(ast.iter_child_nodes(node))))


def _check_primitive_call(node: ast.Call, name: str) -> PrimitiveCall:
    """Check ``get_label``/``get_span`` arity and the literal instruction; return the call."""
    line = node.lineno
    if node.keywords or len(node.args) != 2:
        raise PlanValidationError(
            f"{name} must be called with exactly two positional arguments and no keywords: "
            f"{name}(list_of_texts, \"instruction\")", line)
    instr = node.args[1]
    if not (isinstance(instr, ast.Constant) and isinstance(instr.value, str)):
        raise PlanValidationError(
            f"the instruction (second argument) of {name} must be a string literal such as "
            f"\"What is the genre of the game?\", not a {type(instr).__name__} expression", line)
    if not instr.value.strip():
        raise PlanValidationError(f"the instruction of {name} must not be empty", line)
    return PrimitiveCall("label" if name == "get_label" else "span", instr.value)


# ------------------------------------------------------------------------------------------------
# execution
# ------------------------------------------------------------------------------------------------

def _safe_builtins() -> dict:
    return {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}


def _check_text_list(texts, who: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise PlanRuntimeError(
            f"{who} expects a list of texts as its first argument, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise PlanRuntimeError(f"{who}: item {i} of the texts is {type(t).__name__}, not str")
    return list(texts)


def _wrap_label(fn: Callable) -> Callable:
    def get_label(texts, instruction):
        texts = _check_text_list(texts, "get_label")
        if not texts:
            return []
        out = list(fn(texts, instruction))
        if len(out) != len(texts):
            raise PlanRuntimeError(
                f"get_label({instruction!r}) returned {len(out)} labels for {len(texts)} texts")
        result = []
        for i, v in enumerate(out):
            # accept numpy.bool_ and friends, nothing else
            if getattr(type(v), "strict_yes_no", False):
                result.append(v)  # the planner's dry-run answers: kept so misuse as an index fails
            elif isinstance(v, bool) or type(v).__name__ in ("bool_", "bool8"):
                result.append(bool(v))
            else:
                raise PlanRuntimeError(
                    f"get_label({instruction!r}) item {i} is {type(v).__name__}, not bool")
        return result
    return get_label


def _wrap_span(fn: Callable) -> Callable:
    def get_span(texts, instruction):
        texts = _check_text_list(texts, "get_span")
        if not texts:
            return []
        out = list(fn(texts, instruction))
        if len(out) != len(texts):
            raise PlanRuntimeError(
                f"get_span({instruction!r}) returned {len(out)} span lists for {len(texts)} texts")
        result = []
        for i, spans in enumerate(out):
            if not isinstance(spans, (list, tuple)) or not all(isinstance(s, Span) for s in spans):
                raise PlanRuntimeError(
                    f"get_span({instruction!r}) item {i} is not a list of Span")
            result.append(list(spans))
        return result
    return get_span


def _check_result(result, n: int) -> list[dict | None]:
    if not isinstance(result, (list, tuple)):
        raise PlanRuntimeError(
            f"the plan must return a list with one item per text, got {type(result).__name__}")
    if len(result) != n:
        raise PlanRuntimeError(f"the plan returned {len(result)} items for {n} texts")
    checked: list[dict | None] = []
    for i, item in enumerate(result):
        if item is None:
            checked.append(None)
            continue
        if not isinstance(item, dict):
            raise PlanRuntimeError(
                f"result item {i} is {type(item).__name__}; expected None or a dict of fields")
        fields: dict = {}
        for key, value in item.items():
            if not isinstance(key, str):
                raise PlanRuntimeError(
                    f"result item {i} has a non-str field name {key!r} ({type(key).__name__})")
            if isinstance(value, bool) or getattr(type(value), "strict_yes_no", False):
                fields[key] = bool(value)
            elif isinstance(value, (list, tuple)) and all(isinstance(s, Span) for s in value):
                fields[key] = list(value)
            else:
                raise PlanRuntimeError(
                    f"result item {i} field {key!r} is {type(value).__name__}; "
                    "expected a list of Span or a bool")
        checked.append(fields)
    return checked


def _plan_location(exc: BaseException, source: str) -> str:
    """`` at line N (`code`)`` for the innermost plan frame of ``exc``'s traceback, or ''."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<plan>"]
    if not frames or not frames[-1].lineno:
        return ""
    lineno = frames[-1].lineno
    lines = source.splitlines()
    code = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
    return f" at line {lineno} (`{code}`)" if code else f" at line {lineno}"


def run_plan(
    plan: ValidatedPlan,
    texts: Sequence[str],
    get_label: Callable[[list[str], str], Sequence[bool]],
    get_span: Callable[[list[str], str], Sequence[Sequence[Span]]],
) -> list[dict | None]:
    """Execute a validated plan over ``texts`` with the given primitive implementations.

    ``plan.source`` is validated again (so a hand-built :class:`ValidatedPlan` cannot smuggle
    code past the allow-list), then executed in a fresh namespace whose ``__builtins__`` holds
    only :data:`SAFE_BUILTIN_NAMES` plus the wrapped ``get_label``/``get_span`` and ``Span``.
    The wrapped primitives check that they receive a list of str and that the real primitive
    returns one bool (``get_label``) or one list of Span (``get_span``) per text; an empty text
    list short-circuits to ``[]`` without calling the real primitive.

    Args:
        plan: a plan from :func:`validate_plan`.
        texts: the documents, ``N`` strings; the plan receives a fresh ``list`` copy.
        get_label: ``(list[str], instruction) -> list[bool]`` of the same length.
        get_span: ``(list[str], instruction) -> list[list[Span]]`` of the same length.

    Returns:
        ``N`` items, each None (document not retrieved) or a new dict mapping field name (str)
        to ``list[Span]`` or ``bool``.

    Raises:
        PlanValidationError: if ``plan.source`` no longer validates.
        PlanRuntimeError: any exception raised by the plan or a primitive (message
            ``"plan raised <ExcType> at line N (`code`): <text>"``, cause chained), a primitive result of the wrong length or
            type, or a plan result that is not a list of ``N`` items of None / dict with str
            keys and bool or list-of-Span values (message names the item index).

    Not prevented: CPU or memory exhaustion (see the module docstring).
    """
    checked_plan = validate_plan(plan.source)
    docs = _check_text_list(texts, "run_plan")

    safe = _safe_builtins()
    safe["get_label"] = _wrap_label(get_label)
    safe["get_span"] = _wrap_span(get_span)
    safe["Span"] = Span
    namespace: dict = {"__builtins__": safe, "__name__": "falconer_plan"}
    try:
        code = compile(checked_plan.source, "<plan>", "exec")
        exec(code, namespace)  # noqa: S102 - validated by the allow-list above
        func = namespace[checked_plan.func_name]
        result = func(list(docs))
    except PlanRuntimeError:
        raise
    except Exception as e:  # noqa: BLE001 - everything a plan raises becomes PlanRuntimeError
        raise PlanRuntimeError(
            f"plan raised {type(e).__name__}{_plan_location(e, checked_plan.source)}: {e}") from e
    return _check_result(result, len(docs))
