"""The limited worker process that runs plan batches: untrusted code away from the caller's process.

A plan is Python an LLM wrote. :mod:`falconer_assets.plan.sandbox` checks it against an allow-list,
but a plan that passes can still loop for hours, allocate without bound or crash CPython outright
(hashing a million nested tuples overflows the C stack: SIGSEGV). So mining and the planner's dry
run execute every batch in a child process (:class:`PlanWorker`):

* a fresh interpreter (``python -S -s -B -P``: the standard library and ``falconer_assets.plan`` only,
  no site-packages, so no torch, no Dagster, no numpy; ``PYTHONHASHSEED=0``; its own session, so a
  Ctrl-C reaches the parent only), started once and reused for every batch;
* under operating-system limits: ``RLIMIT_AS`` (memory), a CPU-time timer per batch
  (``ITIMER_PROF``; its signal ends the process, even inside a C loop) backed by ``RLIMIT_CPU``,
  ``RLIMIT_FSIZE`` 0 (it cannot write a file) and ``RLIMIT_CORE`` 0, a recursion limit, and a
  wall-clock timeout the parent enforces (:class:`PlanLimits`);
* the primitives are served from the parent: when the plan calls ``get_label``/``get_span``, the child
  sends ``(kind, instruction, texts)`` over a socket, the parent runs the real primitive (the proxy,
  loaded once, in the parent) and sends the answers back. The parent's time in a primitive does not
  count against the wall-clock limit.

A batch whose worker dies (any signal), is killed at the wall-clock limit or hits a limit raises
:class:`~falconer_assets.plan.sandbox.PlanLimitError`, a ``PlanRuntimeError``: to the caller it is a
failed batch (``mining.mine_batch`` retries it one document at a time and rejects the documents that
still fail, with the reason). The next batch starts a new worker.

Messages from the child are JSON (never unpickled: a child taken over by a plan could otherwise run
code in the parent); messages to the child are pickles. Texts the plan passes on unchanged travel as
their index in the batch.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path

from falconer_assets.plan.limits import DEFAULT_LIMITS, PlanLimits
from falconer_assets.plan.sandbox import (
    PlanLimitError,
    PlanRuntimeError,
    PrimitiveBudget,
    ValidatedPlan,
    bounded_repr,
    bounded_str,
    check_result,
    check_text_list,
    describe_plan_exception,
    load_plan_function,
    validate_plan,
    wrap_primitives,
)
from falconer_assets.spans import Span

__all__ = [
    "MAX_MESSAGE_BYTES",
    "START_TIMEOUT_S",
    "PlanWorkerError",
    "PlanWorker",
    "shared_worker",
    "close_shared_workers",
    "run_plan_isolated",
]

#: Largest message the parent accepts from a worker, in bytes (a batch's primitive texts or result).
MAX_MESSAGE_BYTES = 256 * 2**20
#: Seconds a new worker may take to start and report ready.
START_TIMEOUT_S = 60.0
#: Most workers (one per distinct :class:`PlanLimits`) kept by :func:`shared_worker` in one process.
MAX_SHARED_WORKERS = 4

_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the falconer_assets package
_BOOT = (
    "import json, sys\n"
    "from multiprocessing.connection import Connection\n"
    "conn = Connection(int(sys.argv[1]))\n"
    "try:\n"
    "    sys.path.insert(0, sys.argv[2])\n"
    "    from falconer_assets.plan.worker import _child_main\n"
    "except BaseException:\n"
    "    import traceback\n"
    "    conn.send_bytes(json.dumps(['broken', traceback.format_exc()]).encode())\n"
    "    raise SystemExit(1)\n"
    "_child_main(conn)\n"
)
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LD_LIBRARY_PATH", "TMPDIR")
_CAP_LIMITS = frozenset({"primitive_calls", "primitive_input", "spans", "fields"})


class PlanWorkerError(RuntimeError):
    """The worker process could not be started (an environment problem, not the plan's fault).

    Not a ``PlanRuntimeError``: mining must fail loudly here rather than reject every document.
    """


# ------------------------------------------------------------------------------------------------
# parent side
# ------------------------------------------------------------------------------------------------

class PlanWorker:
    """A persistent child process that runs plan batches under ``limits``; thread-safe (one batch at a time).

    The process starts on the first :meth:`run` and is replaced after it dies, is killed or hits the
    memory limit. Close it with :meth:`close` (or use the worker as a context manager); the shared
    workers of :func:`shared_worker` are closed at exit.

    Args:
        limits: the limits of every batch (:class:`~falconer_assets.plan.limits.PlanLimits`).
    """

    def __init__(self, limits: PlanLimits = DEFAULT_LIMITS):
        self.limits = limits
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._owner = os.getpid()
        self.starts = 0  #: how many processes this worker has started (1 + replacements)

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Process id of the live child, or None when none is running."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _start(self) -> None:
        parent_conn, child_conn = Pipe(duplex=True)
        fd = child_conn.fileno()
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        env["PYTHONHASHSEED"] = "0"  # a plan iterating a set of strings gives the same order every run
        try:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-s", "-B", "-P", "-c", _BOOT, str(fd), _ROOT],
                pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, env=env, cwd="/")
        except OSError as e:
            parent_conn.close()
            raise PlanWorkerError(f"cannot start the plan worker process: {e}") from e
        finally:
            child_conn.close()
        self._proc, self._conn, self._owner = proc, parent_conn, os.getpid()
        self.starts += 1
        try:
            parent_conn.send(("init", self.limits.memory_mib))
            if not parent_conn.poll(START_TIMEOUT_S):
                raise PlanWorkerError(f"the plan worker did not start within {START_TIMEOUT_S:g} s")
            msg = json.loads(parent_conn.recv_bytes(1 << 20))
        except PlanWorkerError:
            self._kill()
            raise
        except (EOFError, OSError, ValueError) as e:
            code = self._kill()
            raise PlanWorkerError(f"the plan worker exited before it was ready (exit code {code}): {e!r}") from None
        if not (isinstance(msg, list) and msg[:1] == ["ready"]):
            self._kill()
            detail = msg[1] if isinstance(msg, list) and len(msg) > 1 else msg
            raise PlanWorkerError(f"the plan worker failed to start: {str(detail)[-2000:]}")

    def _kill(self) -> int | None:
        """Kill and reap the child; return its exit code (negative: the signal)."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill that does not take
            return None

    def close(self) -> None:
        """Ask the child to exit (killing it after 2 s); a later :meth:`run` starts a new one."""
        with self._lock:
            if self._proc is None or os.getpid() != self._owner:
                self._proc = self._conn = None
                return
            try:
                self._conn.send(("exit",))
                self._proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._kill()

    def __enter__(self) -> "PlanWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _death(self) -> PlanLimitError:
        """The error for a child that closed its end: reap it and name the signal or exit code."""
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
        self._kill()
        if code is not None and code < 0:
            sig = -code
            if sig in (signal.SIGPROF, signal.SIGXCPU):
                return PlanLimitError(f"plan exceeded its {self.limits.cpu_seconds:g} s CPU limit", "cpu")
            if sig == signal.SIGXFSZ:
                return PlanLimitError("plan process tried to write a file (killed with SIGXFSZ)", "crash")
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            return PlanLimitError(f"plan process died with {name}", "crash")
        return PlanLimitError(f"plan process exited unexpectedly (exit code {code})", "crash")

    # --- one batch --------------------------------------------------------------------------------

    def run(
        self,
        plan: ValidatedPlan,
        texts: Sequence[str],
        get_label: Callable[[list[str], str], Sequence[bool]],
        get_span: Callable[[list[str], str], Sequence[Sequence[Span]]],
    ) -> list[dict | None]:
        """Run ``plan`` over ``texts`` in the worker; the same contract as ``sandbox.run_plan``.

        ``plan.source`` is validated here (in the parent) first. ``get_label``/``get_span`` run in
        this process, in the calling thread, when the plan calls them; their time does not count
        against ``limits.wall_seconds``.

        Args:
            plan: a plan from ``validate_plan``.
            texts: the batch, ``N`` strings.
            get_label: ``(list[str], instruction) -> list[bool]`` of the same length.
            get_span: ``(list[str], instruction) -> list[list[Span]]`` of the same length.

        Returns:
            ``N`` items, each None or a dict mapping a field name to ``list[Span]`` or ``bool``,
            spans checked against their own document.

        Raises:
            PlanValidationError: ``plan.source`` does not validate.
            PlanLimitError: the plan exceeded its memory (``"plan exceeded its M MiB memory limit"``),
                CPU (``"... N s CPU limit"``) or wall-clock (``"... S s wall-clock limit"``) limit, its
                process died (``"plan process died with SIGSEGV"``) or it hit a cap of ``limits``.
            PlanRuntimeError: the plan raised (``"plan raised <Type> at line N (`code`): <text>"``),
                a primitive failed or returned the wrong shape, or the result broke the plan
                contract (see ``sandbox.check_result``).
            PlanWorkerError: the worker process could not be started.
        """
        checked = validate_plan(plan.source)
        docs = check_text_list(texts, "run_plan")
        with self._lock:
            if os.getpid() != self._owner:  # forked: that child belongs to the parent process
                self._proc = self._conn = None
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._start()
            try:
                return self._run_batch(checked, docs, get_label, get_span)
            except PlanLimitError as e:
                if e.limit in ("memory", "protocol") and self._proc is not None:
                    self._kill()  # a fresh process for the next batch
                raise
            except PlanRuntimeError:
                raise
            except BaseException:  # KeyboardInterrupt, a broken pipe...: the child's state is unknown
                self._kill()
                raise

    def _run_batch(self, plan: ValidatedPlan, docs: list[str], get_label, get_span) -> list[dict | None]:
        limits = self.limits
        budget = PrimitiveBudget(docs, limits)
        label, span = wrap_primitives(get_label, get_span, budget)
        instructions = {"label": set(plan.label_instructions), "span": set(plan.span_instructions)}
        try:
            self._conn.send(("run", plan.source, plan.func_name, docs, limits))
        except OSError:  # the child stopped reading: a batch too large for its memory, or it died
            answered = False
            try:
                answered = self._conn.poll(5) and _parse(self._conn.recv_bytes(1 << 20))[1] == "memory"
            except (EOFError, OSError, PlanLimitError, IndexError):
                pass
            if answered:
                raise PlanLimitError(f"plan exceeded its {limits.memory_mib} MiB memory limit "
                                     "(the batch alone does not fit)", "memory") from None
            raise self._death() from None
        remaining = float(limits.wall_seconds)
        cause: BaseException | None = None
        while True:
            started = time.monotonic()
            if not self._conn.poll(max(remaining, 0.0)):
                self._kill()
                raise PlanLimitError(f"plan exceeded its {limits.wall_seconds:g} s wall-clock limit", "wall")
            try:
                data = self._conn.recv_bytes(MAX_MESSAGE_BYTES)
            except EOFError:
                raise self._death() from None
            except OSError as e:  # over MAX_MESSAGE_BYTES
                self._kill()
                raise PlanLimitError(f"plan worker sent an oversized message ({e})", "protocol") from None
            remaining -= time.monotonic() - started
            msg = _parse(data)
            if msg[0] == "call":
                kind, instruction, encoded = msg[1], msg[2], msg[3]
                if kind not in instructions or instruction not in instructions[kind]:
                    raise _protocol(f"a {bounded_repr(kind)} call with an instruction not in the plan")
                texts = _decode_texts(encoded, docs)
                try:
                    answer = label(texts, instruction) if kind == "label" else _spans_out(span(texts, instruction))
                except PlanRuntimeError as e:
                    cause = e
                    self._conn.send(("err", True, type(e).__name__, str(e)))
                except Exception as e:  # noqa: BLE001 - a failing primitive fails the batch, as in-process
                    cause = e
                    self._conn.send(("err", False, type(e).__name__, bounded_str(e)))
                else:
                    self._conn.send(("ok", answer))
            elif msg[0] == "done":
                return check_result(_decode_results(msg[1], len(docs)), docs, limits)
            else:  # ["fail", limit, message]
                limit, message = msg[1], msg[2]
                if limit == "memory":
                    raise PlanLimitError(f"plan exceeded its {limits.memory_mib} MiB memory limit", "memory")
                if isinstance(cause, PlanRuntimeError) and str(cause) == message:
                    raise cause  # the parent's own check: the same error as in-process
                if limit in _CAP_LIMITS:
                    raise PlanLimitError(message, limit) from cause
                raise PlanRuntimeError(message) from cause


def _protocol(what: str) -> PlanLimitError:
    return PlanLimitError(f"plan worker broke the message protocol: {what}", "protocol")


def _parse(data: bytes) -> list:
    """A child message, shape-checked: ``["call", kind, instruction, texts]``, ``["done", results]``
    or ``["fail", limit | None, message]``."""
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise _protocol(f"not JSON ({type(e).__name__})") from None
    if not isinstance(msg, list) or not msg:
        raise _protocol("not a list")
    if msg[0] == "call" and len(msg) == 4 and isinstance(msg[2], str):
        return msg
    if msg[0] == "done" and len(msg) == 2:
        return msg
    if msg[0] == "fail" and len(msg) == 3 and isinstance(msg[2], str) and (msg[1] is None or msg[1] in _CAP_LIMITS
                                                                           or msg[1] == "memory"):
        msg[2] = msg[2][:2000]
        return msg
    raise _protocol(f"unexpected message {bounded_repr(msg, 80)}")


def _decode_texts(encoded: object, docs: list[str]) -> list[str]:
    """The texts of a primitive call: an int is the batch's text at that index, a str itself."""
    if type(encoded) is not list:
        raise _protocol("primitive texts are not a list")
    out = []
    for x in encoded:
        if type(x) is int and 0 <= x < len(docs):
            out.append(docs[x])
        elif type(x) is str:
            out.append(x)
        else:
            raise _protocol("a primitive text is neither a batch index nor a str")
    return out


def _spans_out(spans: list[list[Span]]) -> list[list[tuple]]:
    """Spans as plain ``(start, end, text, score)`` tuples (the child has no numpy to unpickle with)."""
    try:
        return [[(int(s.start), int(s.end), str(s.text), float(s.score)) for s in row] for row in spans]
    except (TypeError, ValueError, OverflowError) as e:
        raise PlanRuntimeError(f"get_span returned a span with bad fields: {bounded_str(e)}") from e


def _decode_results(encoded: object, n: int) -> list[dict | None]:
    """The child's checked result back into ``None`` / ``{field: bool | list[Span]}`` items."""
    if type(encoded) is not list or len(encoded) != n:
        raise _protocol("the result is not a list of one item per text")
    out: list[dict | None] = []
    for item in encoded:
        if item is None:
            out.append(None)
            continue
        if type(item) is not dict:
            raise _protocol("a result item is neither null nor an object")
        fields: dict = {}
        for key, value in item.items():
            if type(value) is bool:
                fields[key] = value
                continue
            if type(value) is not list:
                raise _protocol("a field value is neither a bool nor a list")
            spans = []
            for s in value:
                if not (type(s) is list and len(s) == 4 and type(s[0]) is int and type(s[1]) is int
                        and type(s[2]) is str and type(s[3]) in (int, float)):
                    raise _protocol("a span is not [start, end, text, score]")
                try:
                    spans.append(Span(s[0], s[1], s[2], s[3]))
                except ValueError as e:
                    raise PlanRuntimeError(f"result field {bounded_repr(key)} holds a bad span: {bounded_str(e)}") from None
            fields[key] = spans
        out.append(fields)
    return out


# --- the shared workers of this process -----------------------------------------------------------

_SHARED: dict[PlanLimits, PlanWorker] = {}
_SHARED_LOCK = threading.Lock()
_SHARED_PID = os.getpid()


def shared_worker(limits: PlanLimits = DEFAULT_LIMITS) -> PlanWorker:
    """This process's worker for ``limits`` (created on first use, closed at exit).

    At most :data:`MAX_SHARED_WORKERS` are kept; asking for another closes the oldest. After a fork
    the child process starts its own.
    """
    global _SHARED_PID
    with _SHARED_LOCK:
        if os.getpid() != _SHARED_PID:
            _SHARED.clear()
            _SHARED_PID = os.getpid()
        worker = _SHARED.get(limits)
        if worker is None:
            while len(_SHARED) >= MAX_SHARED_WORKERS:
                _SHARED.pop(next(iter(_SHARED))).close()
            worker = _SHARED[limits] = PlanWorker(limits)
        return worker


def close_shared_workers() -> None:
    """Close every worker of :func:`shared_worker` (registered with :mod:`atexit`)."""
    with _SHARED_LOCK:
        workers = list(_SHARED.values()) if os.getpid() == _SHARED_PID else []
        _SHARED.clear()
    for worker in workers:
        worker.close()


atexit.register(close_shared_workers)


def run_plan_isolated(
    plan: ValidatedPlan,
    texts: Sequence[str],
    get_label: Callable[[list[str], str], Sequence[bool]],
    get_span: Callable[[list[str], str], Sequence[Sequence[Span]]],
    limits: PlanLimits = DEFAULT_LIMITS,
) -> list[dict | None]:
    """``sandbox.run_plan``'s contract, run in this process's limited worker for ``limits``.

    See :meth:`PlanWorker.run` for the arguments, the result and the errors raised
    (``PlanValidationError``, ``PlanLimitError``, ``PlanRuntimeError``, ``PlanWorkerError``).
    """
    return shared_worker(limits).run(plan, texts, get_label, get_span)


# ------------------------------------------------------------------------------------------------
# child side (runs in the worker process: standard library and falconer_assets.plan only)
# ------------------------------------------------------------------------------------------------

class _Relayed(Exception):
    """A primitive's exception in the parent, re-raised inside the plan under its type's name."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


def _child_main(conn: Connection) -> None:
    """Entry point of the worker process: apply the limits, report ready, serve batches until EOF."""
    import resource

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _, memory_mib = conn.recv()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        cap = memory_mib * 2**20
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        conn.send_bytes(json.dumps(["ready", os.getpid()]).encode())
    except BaseException:
        import traceback
        conn.send_bytes(json.dumps(["broken", traceback.format_exc()]).encode())
        raise SystemExit(1) from None
    loaded: dict[tuple[str, str], tuple[Callable, dict]] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        except MemoryError:  # a batch too large to receive: say so, then end (the stream is cut)
            conn.send_bytes(json.dumps(["fail", "memory", ""]).encode())
            return
        if msg[0] != "run":
            return
        _, source, func_name, docs, limits = msg
        reply = _child_batch(conn, loaded, source, func_name, docs, limits)
        try:
            data = json.dumps(reply).encode()
        except MemoryError:
            data = json.dumps(["fail", "memory", ""]).encode()
        conn.send_bytes(data)


def _child_batch(conn: Connection, loaded: dict, source: str, func_name: str, docs: list[str],
                 limits: PlanLimits) -> list:
    """Run one batch in the worker; the reply message (``done``/``fail``)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + limits.cpu_seconds) + 1  # the backstop
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    default_depth = sys.getrecursionlimit()
    result = None
    signal.setitimer(signal.ITIMER_PROF, limits.cpu_seconds)  # SIGPROF's default action ends the process
    try:
        key = (source, func_name)
        if key not in loaded:
            if len(loaded) >= 8:
                loaded.clear()
            loaded[key] = load_plan_function(ValidatedPlan(source, func_name, (), ""))
        func, safe = loaded[key]
        index = {id(d): i for i, d in enumerate(docs)}

        def ask(kind: str, texts: list[str], instruction: str) -> list:
            encoded = []
            for t in texts:
                i = index.get(id(t))
                encoded.append(i if i is not None and docs[i] is t else t)
            conn.send_bytes(json.dumps(["call", kind, instruction, encoded]).encode())
            reply = conn.recv()
            if reply[0] == "ok":
                return reply[1]
            _, is_plan_error, type_name, message = reply
            raise PlanRuntimeError(message) if is_plan_error else _Relayed(type_name, message)

        def get_label(texts, instruction):
            return ask("label", texts, instruction)

        def get_span(texts, instruction):
            return [[Span(*s) for s in row] for row in ask("span", texts, instruction)]

        safe["get_label"], safe["get_span"] = wrap_primitives(get_label, get_span, PrimitiveBudget(docs, limits))
        sys.setrecursionlimit(limits.recursion_limit)
        try:
            result = func(list(docs))
        finally:
            sys.setrecursionlimit(default_depth)
        checked = check_result(result, docs, limits)
        result = None
        return ["done", [None if r is None else {k: v if isinstance(v, bool) else
                                                 [[s.start, s.end, s.text, s.score] for s in v]
                                                 for k, v in r.items()} for r in checked]]
    except MemoryError:
        return ["fail", "memory", ""]
    except PlanLimitError as e:
        return ["fail", e.limit if e.limit in _CAP_LIMITS else None, str(e)]
    except PlanRuntimeError as e:
        return ["fail", None, str(e)]
    except _Relayed as e:
        return ["fail", None, describe_plan_exception(e, source, type_name=e.type_name)]
    except Exception as e:  # noqa: BLE001 - everything a plan raises is a failed batch
        return ["fail", None, describe_plan_exception(e, source)]
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        result = None
