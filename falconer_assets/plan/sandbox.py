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

The allow-list is one layer. Past it, every batch runs under :class:`~falconer_assets.plan.limits.PlanLimits`:
caps on primitive calls, on the texts sent to the primitives and on the spans and fields of the
result, and a check of every returned span against its own document's text (:func:`check_result`).
:func:`run_plan` runs the plan in *this* process, where CPU and memory exhaustion (``[0] *
10000000000``, ``for i in range(10**12)`` written as literals) and interpreter crashes (hashing a
million nested tuples segfaults CPython) are not prevented: it is for tests and benchmarks. Untrusted
plans run in the limited worker process of :mod:`falconer_assets.plan.worker`
(``run_plan_isolated``), which adds the memory, CPU, recursion and wall-clock limits and survives a
crash. ``**`` and shifts are rejected only because they make such bombs trivially short.

Every error of :func:`validate_plan` is a :class:`PlanValidationError` and every error of
:func:`run_plan` a :class:`PlanRuntimeError` (deep nesting and huge numbers included), with the line
where known and values shown through :func:`bounded_repr`.
"""

from __future__ import annotations

import ast
import builtins
import copy
import hashlib
import math
import operator
import re
import reprlib
import traceback
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from falconer_assets.plan.limits import DEFAULT_LIMITS, FIELD_NAME_PATTERN, PlanLimits
from falconer_assets.spans import Span

__all__ = [
    "MAX_SOURCE_CHARS",
    "MAX_AST_NODES",
    "MAX_AST_DEPTH",
    "MAX_INT_BITS",
    "PRIMITIVES",
    "SAFE_BUILTIN_NAMES",
    "ALLOWED_ATTRIBUTES",
    "PlanValidationError",
    "PlanRuntimeError",
    "PlanLimitError",
    "PrimitiveCall",
    "ValidatedPlan",
    "validate_plan",
    "run_plan",
    "bounded_repr",
    "bounded_str",
    "PrimitiveBudget",
    "wrap_primitives",
    "load_plan_function",
    "describe_plan_exception",
    "check_result",
    "check_text_list",
]

#: Longest plan source accepted, in characters.
MAX_SOURCE_CHARS = 20_000
#: Most AST nodes accepted (a 20k-character plan of ordinary code has well under this).
MAX_AST_NODES = 5_000
#: Deepest AST nesting accepted, in nodes from the module down (ordinary plans stay under 20). Deeper
#: trees (a 250-term ``t + t + ...``, 1,000 chained ``not``) would overflow the recursive code that
#: compiles and hashes them.
MAX_AST_DEPTH = 64
#: Largest integer constant accepted, in bits (a plan needs no number above 2**64; an 8,000-digit one
#: cannot even be printed in an error message).
MAX_INT_BITS = 64
#: Longest value representation in an error message, in characters (see :func:`bounded_repr`).
REPR_CHARS = 200

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

    Raised by :func:`run_plan` and the worker's ``run_plan_isolated``; the message names the
    exception type and text, or the index of the offending result item.  The original exception,
    if any, is chained as ``__cause__`` (in this process: a plan's own exception in the worker
    exists only as its type name and text).
    """


class PlanLimitError(PlanRuntimeError):
    """A plan batch hit one of its limits, or its worker process died.

    ``limit`` names which: ``"memory"``, ``"cpu"``, ``"wall"`` (the worker's OS limits and the
    wall-clock timeout), ``"crash"`` (the worker died, e.g. with SIGSEGV), ``"primitive_calls"``,
    ``"primitive_input"``, ``"spans"``, ``"fields"`` (the caps of
    :class:`~falconer_assets.plan.limits.PlanLimits`) or ``"protocol"`` (the worker broke the
    message protocol).  The message says which limit and its value, e.g. ``"plan exceeded its
    1024 MiB memory limit"``.
    """

    def __init__(self, message: str, limit: str):
        self.limit = limit
        super().__init__(message)


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

    @property
    def field_names(self) -> tuple[str, ...]:
        """The output field names the plan writes, found statically, distinct, in source order.

        A field name is a string written literally as a key: of a dict display (``{"price": spans}``),
        a ``dict(price=spans)`` keyword, or a subscript assignment (``item["price"] = spans``). Keys
        computed at run time (``{name: spans}``, f-strings) are not seen, so ``()`` means the plan names
        no field literally. Names are returned as written, not checked against
        :data:`~falconer_assets.plan.limits.FIELD_NAME_PATTERN` (the caller decides).
        """
        names: list[str] = []

        def add(node: ast.AST | None) -> None:
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value not in names:
                names.append(node.value)

        nodes = sorted((n for n in ast.walk(ast.parse(self.source)) if hasattr(n, "lineno")),
                       key=lambda n: (n.lineno, n.col_offset))
        for node in nodes:
            if isinstance(node, ast.Dict):
                for key in node.keys:
                    add(key)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
                for kw in node.keywords:
                    if kw.arg is not None:
                        add(ast.Constant(kw.arg))
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Subscript):
                        add(target.slice)
        return tuple(names)


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = REPR_CHARS
_REPR.maxother = REPR_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 8


def bounded_repr(value: object, limit: int = REPR_CHARS) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters and never raising.

    Containers are shown 3 levels deep and 8 items wide (:mod:`reprlib`); an int over
    :data:`MAX_INT_BITS` bits is shown as ``<int of N bits>`` (CPython refuses to print ints over
    4,300 digits); a value whose repr raises (RecursionError on deep nesting, ValueError) is shown
    as ``<T object>``.  Long strings are shortened in the middle (``'abc...xyz'``); anything still
    longer than ``limit`` is cut to ``limit`` characters ending in ``...``.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        text = f"<int of {value.bit_length()} bits>"
    else:
        try:
            text = _REPR.repr(value)
        except Exception:  # noqa: BLE001 - any failure of repr: show the type only
            text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def bounded_str(exc: BaseException, limit: int = 2 * REPR_CHARS) -> str:
    """``str(exc)`` for an error message, at most ``limit`` characters and never raising.

    ``str`` of a KeyError holding an 8,000-digit int raises ValueError, and of one holding a deeply
    nested tuple RecursionError: those show as ``<unprintable T>``.
    """
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001
        text = f"<unprintable {type(exc).__name__}>"
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


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
            literal instruction, a tree nested deeper than :data:`MAX_AST_DEPTH`, an int constant
            over :data:`MAX_INT_BITS` bits, a name read outside the scope that binds it (a
            comprehension's target is not defined outside the comprehension, so the function's
            own name can never be reached), or no primitive call at all; any other failure while
            validating (RecursionError, MemoryError, ValueError) is wrapped too.  The message
            names the line and the construct.

    Source: paper section 3.4 (plans compose ``get_label``/``get_span`` with explicit control
    flow); the static-instruction rule makes the sub-task set known before execution.
    """
    if isinstance(source, str) and source in _VALIDATED:
        return _VALIDATED[source]  # validation is a pure function of the source: mining re-checks every batch
    try:
        plan = _validate(source)
    except PlanValidationError:
        raise
    except RecursionError:
        raise PlanValidationError("plan is nested too deeply to validate (RecursionError)") from None
    except Exception as e:  # noqa: BLE001 - MemoryError, ValueError...: still the module's own error
        raise PlanValidationError(f"cannot validate plan: {type(e).__name__}: {bounded_str(e)}") from None
    if len(_VALIDATED) >= 64:
        _VALIDATED.clear()
    _VALIDATED[source] = plan
    return plan


_VALIDATED: dict[str, ValidatedPlan] = {}  # source -> its validation, the last <= 64 sources that passed


def _validate(source: str) -> ValidatedPlan:
    """:func:`validate_plan` without the catch-all wrapper."""
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
        raise PlanValidationError(f"cannot parse plan: {type(e).__name__}: {bounded_str(e)}") from None

    n_nodes = sum(1 for _ in ast.walk(tree))
    if n_nodes > MAX_AST_NODES:
        raise PlanValidationError(f"plan has {n_nodes} AST nodes, over the limit of {MAX_AST_NODES}")
    depth, deep_line = _max_depth(tree)
    if depth > MAX_AST_DEPTH:
        raise PlanValidationError(
            f"plan is nested {depth} levels deep, over the limit of {MAX_AST_DEPTH}; split long "
            "expressions into several statements", deep_line)

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
    out_of_scope = _names_out_of_scope(func, param)

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
            if isinstance(node.value, int) and node.value.bit_length() > MAX_INT_BITS:
                raise PlanValidationError(
                    f"integer constant of {node.value.bit_length()} bits is too large (at most "
                    f"{MAX_INT_BITS} bits)", line)

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
                if ident not in _PROVIDED_NAMES and id(node) in out_of_scope:
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


def _max_depth(tree: ast.AST) -> tuple[int, int | None]:
    """``(depth, line)`` of the deepest node of ``tree`` (the module counts 1), without recursion."""
    best, best_line = 0, None
    stack: list[tuple[ast.AST, int, int | None]] = [(tree, 1, None)]
    while stack:
        node, depth, parent_line = stack.pop()
        line = getattr(node, "lineno", None) or parent_line
        if depth > best:
            best, best_line = depth, line
        stack.extend((child, depth + 1, line) for child in ast.iter_child_nodes(node))
    return best, best_line


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _stored_names(node: ast.AST) -> set[str]:
    """Names bound by the target ``node`` (a Name, or a tuple/list of them)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _names_out_of_scope(func: ast.FunctionDef, param: str) -> set[int]:
    """ids of the Name-load nodes of ``func`` that no enclosing scope of the plan binds.

    Python's scoping: a name bound anywhere in the function body (outside comprehensions) is a
    local of the function; a comprehension's targets are locals of the comprehension only, visible
    in its element, its conditions and every iterable but the first (which is evaluated in the
    enclosing scope).  A name read where no scope binds it would be looked up in the plan's globals,
    where only the plan function itself lives: so it is reported, never resolved (a plan cannot
    call itself, e.g. as ``sorted(texts, key=plan)`` after ``[plan for plan in texts]``).
    Iterative, so deep trees cannot overflow it.
    """
    function_names = {param}
    stack: list[ast.AST] = list(func.body)
    while stack:  # the function's own locals: stores outside any comprehension
        node = stack.pop()
        if isinstance(node, _COMPREHENSIONS):
            stack.append(node.generators[0].iter)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            function_names.add(node.id)
        stack.extend(ast.iter_child_nodes(node))

    unbound: set[int] = set()
    scoped: list[tuple[ast.AST, frozenset[str]]] = [(s, frozenset(function_names)) for s in func.body]
    while scoped:
        node, visible = scoped.pop()
        if isinstance(node, _COMPREHENSIONS):
            inner = visible | {name for gen in node.generators for name in _stored_names(gen.target)}
            scoped.append((node.generators[0].iter, visible))
            for i, gen in enumerate(node.generators):
                if i:
                    scoped.append((gen.iter, inner))
                scoped.append((gen.target, inner))
                scoped.extend((cond, inner) for cond in gen.ifs)
            parts = (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,)
            scoped.extend((part, inner) for part in parts)
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store) and node.id not in visible:
            unbound.add(id(node))
        scoped.extend((child, visible) for child in ast.iter_child_nodes(node))
    return unbound


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

_FIELD_NAME = re.compile(FIELD_NAME_PATTERN)


def _safe_builtins() -> dict:
    return {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}


def check_text_list(texts: object, who: str) -> list[str]:
    """``texts`` as a new list, after checking it is a list or tuple of str.

    Raises:
        PlanRuntimeError: not a list/tuple (a bare str included) or an item that is not a str; the
            message starts with ``who``.
    """
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise PlanRuntimeError(
            f"{who} expects a list of texts as its first argument, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise PlanRuntimeError(f"{who}: item {i} of the texts is {type(t).__name__}, not str")
    return list(texts)


class PrimitiveBudget:
    """What one plan batch may still ask of the primitives (the caps of :class:`PlanLimits`).

    Args:
        docs: the batch's ``N`` texts.
        limits: ``max_primitive_calls`` calls; texts passed to the primitives, all calls together,
            at most ``max_primitive_input`` times ``N`` and at most ``max_primitive_input`` times
            the batch's characters.

    Attributes:
        calls, texts, chars: what was charged so far.
    """

    def __init__(self, docs: Sequence[str], limits: PlanLimits):
        self.limits = limits
        self.calls = self.texts = self.chars = 0
        self.max_texts = limits.max_primitive_input * max(1, len(docs))
        self.max_chars = limits.max_primitive_input * max(1, sum(len(d) for d in docs))

    def charge(self, texts: Sequence[str]) -> None:
        """Count one primitive call on ``texts`` (a list of str).

        Raises:
            PlanLimitError: ``limit="primitive_calls"`` on call ``max_primitive_calls + 1``;
                ``limit="primitive_input"`` when the texts or characters passed so far exceed
                their cap.
        """
        self.calls += 1
        if self.calls > self.limits.max_primitive_calls:
            raise PlanLimitError(
                f"plan exceeded its limit of {self.limits.max_primitive_calls} primitive calls per "
                "batch", "primitive_calls")
        self.texts += len(texts)
        self.chars += sum(len(t) for t in texts)
        if self.texts > self.max_texts or self.chars > self.max_chars:
            raise PlanLimitError(
                f"plan passed {self.texts} texts ({self.chars} characters) to the primitives, over "
                f"its limit of {self.limits.max_primitive_input}x the batch ({self.max_texts} texts, "
                f"{self.max_chars} characters)", "primitive_input")


def _check_labels(out, texts: list[str], instruction: str) -> list:
    out = list(out)
    if len(out) != len(texts):
        raise PlanRuntimeError(
            f"get_label({bounded_repr(instruction)}) returned {len(out)} labels for {len(texts)} texts")
    result = []
    for i, v in enumerate(out):
        # accept numpy.bool_ and friends, nothing else
        if getattr(type(v), "strict_yes_no", False):
            result.append(v)  # the planner's dry-run answers: kept so misuse as an index fails
        elif isinstance(v, bool) or (type(v).__module__ == "numpy" and type(v).__name__ in ("bool_", "bool8", "bool")):
            result.append(bool(v))
        else:
            raise PlanRuntimeError(
                f"get_label({bounded_repr(instruction)}) item {i} is {type(v).__name__}, not bool")
    return result


def _check_spans(out, texts: list[str], instruction: str) -> list[list[Span]]:
    out = list(out)
    if len(out) != len(texts):
        raise PlanRuntimeError(
            f"get_span({bounded_repr(instruction)}) returned {len(out)} span lists for {len(texts)} texts")
    result = []
    for i, spans in enumerate(out):
        if not isinstance(spans, (list, tuple)) or not all(isinstance(s, Span) for s in spans):
            raise PlanRuntimeError(f"get_span({bounded_repr(instruction)}) item {i} is not a list of Span")
        result.append(list(spans))
    return result


def wrap_primitives(
    get_label: Callable[[list[str], str], Sequence[bool]],
    get_span: Callable[[list[str], str], Sequence[Sequence[Span]]],
    budget: PrimitiveBudget,
) -> tuple[Callable[[list[str], str], list], Callable[[list[str], str], list[list[Span]]]]:
    """The checked ``(get_label, get_span)`` a plan calls.

    Each wrapper checks that it gets a list (or tuple) of str, charges ``budget`` (so it raises
    :class:`PlanLimitError` past a cap), returns ``[]`` for no texts without calling the real
    primitive, and checks that the real one returns one bool (``get_label``) or one list of
    :class:`Span` (``get_span``) per text.  Exceptions of the real primitive propagate unchanged.

    Raises (from the wrappers):
        PlanRuntimeError: texts that are not a list of str, or a primitive result of the wrong
            length or type.
        PlanLimitError: a cap of the budget exceeded.
    """

    def label(texts, instruction):
        texts = check_text_list(texts, "get_label")
        budget.charge(texts)
        return _check_labels(get_label(texts, instruction), texts, instruction) if texts else []

    def span(texts, instruction):
        texts = check_text_list(texts, "get_span")
        budget.charge(texts)
        return _check_spans(get_span(texts, instruction), texts, instruction) if texts else []

    label.__name__, span.__name__ = "get_label", "get_span"
    return label, span


def load_plan_function(plan: ValidatedPlan) -> tuple[Callable[[list[str]], object], dict]:
    """Compile ``plan.source`` (not validated again) and return ``(function, builtins)``.

    The module runs in a fresh namespace whose ``__builtins__`` is the returned dict: the
    :data:`SAFE_BUILTIN_NAMES`, ``Span``, and ``get_label``/``get_span`` set to None (the caller
    puts the wrapped primitives there before each call).  The function is removed from the
    namespace after definition, so the plan cannot reach itself by name.

    Raises:
        PlanRuntimeError: the source does not compile or define ``plan.func_name``.
    """
    safe = _safe_builtins()
    safe.update(get_label=None, get_span=None, Span=Span)
    namespace: dict = {"__builtins__": safe, "__name__": "falconer_plan"}
    try:
        exec(compile(plan.source, "<plan>", "exec"), namespace)  # noqa: S102 - validated by the caller
        func = namespace.pop(plan.func_name)
    except Exception as e:  # noqa: BLE001
        raise PlanRuntimeError(f"cannot load the plan: {type(e).__name__}: {bounded_str(e)}") from e
    return func, safe


def describe_plan_exception(exc: BaseException, source: str, type_name: str | None = None) -> str:
    """``"plan raised <ExcType> at line N (`code`): <text>"`` for an exception a plan raised.

    The line is the innermost frame of the plan in ``exc``'s traceback (omitted when none); the text
    is :func:`bounded_str`; ``type_name`` replaces ``type(exc).__name__`` (an exception relayed from
    another process).  Never raises.
    """
    try:
        where = _plan_location(exc, source)
    except Exception:  # noqa: BLE001 - e.g. a traceback too deep to extract
        where = ""
    return f"plan raised {type_name or type(exc).__name__}{where}: {bounded_str(exc)}"


def _check_span_in_doc(span: Span, doc: str, where: str) -> Span:
    """``span`` (with plain int offsets and a float score) after checking it lies in ``doc``."""
    start, end, text, score = span.start, span.end, span.text, span.score
    if type(start) is not int or type(end) is not int or type(score) is not float:
        try:  # numpy ints and floats from a model: the same values as plain Python numbers
            start, end, score = operator.index(start), operator.index(end), float(score)
        except (TypeError, ValueError, OverflowError):
            raise PlanRuntimeError(f"{where} has offsets or a score of the wrong type: {bounded_repr(span)}") from None
    if type(text) is not str:
        raise PlanRuntimeError(f"{where} has a text of type {type(text).__name__}, not str")
    if not math.isfinite(score):
        raise PlanRuntimeError(f"{where} has a score that is not a finite number: {bounded_repr(score)}")
    if not 0 <= start < end <= len(doc):
        raise PlanRuntimeError(
            f"{where} [{start}, {end}) lies outside its document (length {len(doc)}); spans must "
            "come from get_span on that document's text")
    if doc[start:end] != text:
        raise PlanRuntimeError(
            f"{where} {bounded_repr(text)} at [{start}, {end}) does not match its document's text "
            f"there ({bounded_repr(doc[start:end])}); spans must come from get_span on that document")
    if start is span.start and end is span.end and score is span.score:
        return span
    return Span(start, end, text, score)


def check_result(result: object, docs: Sequence[str], limits: PlanLimits = DEFAULT_LIMITS) -> list[dict | None]:
    """Check a plan's result against the plan contract and return a normalised copy.

    Args:
        result: what the plan returned.
        docs: the batch's ``N`` texts, in order.
        limits: ``max_spans_per_doc`` and ``max_fields_per_doc`` apply per item.

    Returns:
        ``N`` items, each None or a new dict mapping a field name to a ``list[Span]`` or a bool.

    Raises:
        PlanRuntimeError: not a list/tuple of ``N`` items; an item that is not None or a dict; a
            field name that is not a str matching :data:`~falconer_assets.plan.limits.FIELD_NAME_PATTERN`
            (``re.fullmatch``); a value that is not a bool or a list of Span; a span whose offsets
            are not integers inside its own document, whose text is not ``doc[start:end]`` or
            whose score is not a finite number (numpy numbers become plain ``int``/``float``).
            The message names the item index and field.
        PlanLimitError: an item with more than ``max_fields_per_doc`` fields
            (``limit="fields"``) or more than ``max_spans_per_doc`` spans (``limit="spans"``).
    """
    n = len(docs)
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
        if len(item) > limits.max_fields_per_doc:
            raise PlanLimitError(
                f"result item {i} has {len(item)} fields, over the limit of {limits.max_fields_per_doc}",
                "fields")
        fields: dict = {}
        n_spans = 0
        for key, value in item.items():
            if not isinstance(key, str):
                raise PlanRuntimeError(
                    f"result item {i} has a non-str field name {bounded_repr(key)} ({type(key).__name__})")
            if not _FIELD_NAME.fullmatch(key):
                raise PlanRuntimeError(
                    f"result item {i} has the field name {bounded_repr(key)}, which does not match "
                    f"{FIELD_NAME_PATTERN} (a lowercase identifier)")
            if isinstance(value, bool) or getattr(type(value), "strict_yes_no", False):
                fields[key] = bool(value)
                continue
            if not isinstance(value, (list, tuple)) or not all(isinstance(s, Span) for s in value):
                raise PlanRuntimeError(
                    f"result item {i} field {key!r} is {type(value).__name__}; "
                    "expected a list of Span or a bool")
            n_spans += len(value)
            if n_spans > limits.max_spans_per_doc:
                raise PlanLimitError(
                    f"result item {i} has more than {limits.max_spans_per_doc} spans, the limit per "
                    "document", "spans")
            fields[key] = [_check_span_in_doc(span, docs[i], f"result item {i} field {key!r} span {j}")
                           for j, span in enumerate(value)]
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
    if len(code) > REPR_CHARS:
        code = code[: REPR_CHARS - 3] + "..."
    return f" at line {lineno} (`{code}`)" if code else f" at line {lineno}"


def run_plan(
    plan: ValidatedPlan,
    texts: Sequence[str],
    get_label: Callable[[list[str], str], Sequence[bool]],
    get_span: Callable[[list[str], str], Sequence[Sequence[Span]]],
    limits: PlanLimits = DEFAULT_LIMITS,
) -> list[dict | None]:
    """Execute a validated plan over ``texts`` in THIS process (tests, benchmarks, trusted plans).

    ``plan.source`` is validated again (so a hand-built :class:`ValidatedPlan` cannot smuggle
    code past the allow-list), then executed in a fresh namespace whose ``__builtins__`` holds
    only :data:`SAFE_BUILTIN_NAMES` plus the wrapped ``get_label``/``get_span`` (see
    :func:`wrap_primitives`) and ``Span``; the result is checked by :func:`check_result`.

    Untrusted plans run in the limited worker instead
    (:func:`falconer_assets.plan.worker.run_plan_isolated`): here CPU and memory exhaustion and
    crashes of the interpreter are not prevented, and ``limits``' OS limits do not apply (its
    caps on primitive use, spans and fields do).

    Args:
        plan: a plan from :func:`validate_plan`.
        texts: the documents, ``N`` strings; the plan receives a fresh ``list`` copy.
        get_label: ``(list[str], instruction) -> list[bool]`` of the same length.
        get_span: ``(list[str], instruction) -> list[list[Span]]`` of the same length.
        limits: the caps (:class:`~falconer_assets.plan.limits.PlanLimits`).

    Returns:
        ``N`` items, each None (document not retrieved) or a new dict mapping field name (str)
        to ``list[Span]`` or ``bool``.

    Raises:
        PlanValidationError: if ``plan.source`` no longer validates.
        PlanRuntimeError: any exception raised by the plan or a primitive (message
            ``"plan raised <ExcType> at line N (`code`): <text>"``, cause chained), a primitive
            result of the wrong length or type, or a result :func:`check_result` refuses.
        PlanLimitError: a cap of ``limits`` exceeded.
    """
    checked_plan = validate_plan(plan.source)
    try:
        docs = check_text_list(texts, "run_plan")
        func, safe = load_plan_function(checked_plan)
        safe["get_label"], safe["get_span"] = wrap_primitives(get_label, get_span, PrimitiveBudget(docs, limits))
        try:
            result = func(list(docs))
        except PlanRuntimeError:
            raise
        except Exception as e:  # noqa: BLE001 - everything a plan raises becomes PlanRuntimeError
            raise PlanRuntimeError(describe_plan_exception(e, checked_plan.source)) from e
        return check_result(result, docs, limits)
    except PlanRuntimeError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. RecursionError while checking a deep result
        raise PlanRuntimeError(f"plan result could not be checked: {type(e).__name__}: {bounded_str(e)}") from e
