"""The limits a plan runs under: one frozen dataclass, shared by the in-process runner and the worker.

A plan is untrusted code (an LLM writes it), so besides the AST allow-list of
:mod:`falconer_assets.plan.sandbox` every plan batch runs under these limits. The operating-system
limits (memory, CPU, recursion, wall clock) hold only in the limited worker process of
:mod:`falconer_assets.plan.worker`; the caps on primitive use and on the result hold in both runners.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PlanLimits", "DEFAULT_LIMITS", "FIELD_NAME_PATTERN"]

#: What a field name of a plan's result dict must ``re.fullmatch``: a lowercase identifier of at most
#: 64 characters (the task files' field names are lowercase identifiers; the length bound keeps a
#: plan from writing a megabyte field name into every row).
FIELD_NAME_PATTERN = r"[a-z][a-z0-9_]{0,63}"


@dataclass(frozen=True)
class PlanLimits:
    """Limits of one plan batch (one ``run_plan`` call over ``N`` texts).

    Attributes:
        memory_mib: address space of the worker process (``RLIMIT_AS``), in MiB (2**20 bytes). A plan
            that allocates past it fails with "plan exceeded its M MiB memory limit". Worker only.
        cpu_seconds: CPU time (user + system) the worker may spend on one batch, in seconds: a
            profiling timer (``ITIMER_PROF``, whose signal ends the process even inside a C loop),
            backed by ``RLIMIT_CPU`` one second later. Worker only.
        wall_seconds: wall-clock time of the plan's own work in one batch, in seconds; the time the
            parent spends answering ``get_label``/``get_span`` (the proxy or the LLM) does not count.
            Worker only.
        recursion_limit: ``sys.setrecursionlimit`` of the worker while a plan runs (Python frames).
            Worker only.
        max_primitive_calls: ``get_label`` + ``get_span`` calls one batch may make.
        max_primitive_input: the texts passed to the primitives in one batch, all calls together, may
            number at most this many times the batch's ``N`` texts and hold at most this many times
            its characters (a plan asking 20 questions about every text uses 20).
        max_spans_per_doc: spans one result item (one document) may hold, all fields together.
        max_fields_per_doc: fields one result item may have.

    Raises:
        ValueError: a limit that is not a positive number (``memory_mib`` below 64, where the
            worker's own interpreter would not fit).
    """

    memory_mib: int = 1024
    cpu_seconds: float = 10.0
    wall_seconds: float = 30.0
    recursion_limit: int = 500
    max_primitive_calls: int = 256
    max_primitive_input: int = 64
    max_spans_per_doc: int = 1000
    max_fields_per_doc: int = 64

    def __post_init__(self) -> None:
        for name in ("recursion_limit", "max_primitive_calls", "max_primitive_input",
                     "max_spans_per_doc", "max_fields_per_doc"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PlanLimits.{name} must be a positive int, got {value!r}")
        if not isinstance(self.memory_mib, int) or isinstance(self.memory_mib, bool) or self.memory_mib < 64:
            raise ValueError(f"PlanLimits.memory_mib must be an int >= 64, got {self.memory_mib!r}")
        for name in ("cpu_seconds", "wall_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1e6:
                raise ValueError(f"PlanLimits.{name} must be a positive number of seconds, got {value!r}")
        if self.recursion_limit < 100:
            raise ValueError(f"PlanLimits.recursion_limit must be >= 100 (the worker's own frames), "
                             f"got {self.recursion_limit}")


#: The limits used when a caller gives none.
DEFAULT_LIMITS = PlanLimits()
