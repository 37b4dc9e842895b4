"""Tests for falconer_assets.plan.worker: the limited process plans run in, primitives served from here."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from falconer_assets.inputs.corpus import Document
from falconer_assets.mining import mine_batch, mine_documents
from falconer_assets.plan.limits import PlanLimits
from falconer_assets.plan.sandbox import PlanLimitError, PlanRuntimeError, run_plan, validate_plan
from falconer_assets.plan.worker import PlanWorker, run_plan_isolated
from falconer_assets.spans import Span

from .conftest import GAME_PLAN

TIGHT = PlanLimits(memory_mib=256, cpu_seconds=2, wall_seconds=30)


def game_label(texts, q):
    return ["game" in t for t in texts]


def genre_span(texts, q):
    out = []
    for t in texts:
        word = t.split()[-2]
        out.append([Span.of(t, t.index(word), t.index(word) + len(word), 0.9)])
    return out


DOCS = ["Frozen Bubble is a puzzle game.", "libyaml-perl: a YAML parser.", "Wesnoth is a strategy game."]


def test_worker_gives_the_in_process_result_and_is_reused():
    plan = validate_plan(GAME_PLAN)
    with PlanWorker(TIGHT) as worker:
        pids = set()

        def label(texts, q):  # served in this process, while the plan runs in the worker
            pids.add(os.getpid())
            return game_label(texts, q)

        first = worker.run(plan, DOCS, label, genre_span)
        child = worker.pid
        second = worker.run(plan, DOCS[:1], label, genre_span)
        assert first == run_plan(plan, DOCS, game_label, genre_span)
        assert first[0] == {"genre": [Span(19, 25, "puzzle", 0.9)]} and first[1] is None
        assert second == first[:1]
        assert pids == {os.getpid()} and child not in (None, os.getpid())
        assert worker.pid == child and worker.starts == 1


def test_dead_worker_is_replaced_and_a_crash_is_a_failed_batch():
    plan = validate_plan(GAME_PLAN)
    crash = validate_plan('def plan(texts):\n    x = get_label(texts, "Is it?")\n    t = ()\n'
                          '    for i in range(1000000):\n        t = (t,)\n    d = {t: 1}\n    return x\n')
    with PlanWorker(TIGHT) as worker:
        worker.run(plan, DOCS, game_label, genre_span)
        os.kill(worker.pid, signal.SIGKILL)
        time.sleep(0.1)
        assert worker.run(plan, DOCS, game_label, genre_span)[0] is not None  # a new process
        with pytest.raises(PlanLimitError, match="^plan process died with SIGSEGV$") as info:
            worker.run(crash, DOCS, game_label, genre_span)
        assert info.value.limit == "crash"
        assert worker.run(plan, DOCS, game_label, genre_span)[2] is not None
        assert worker.starts == 3


def test_wall_clock_limit_counts_the_plan_not_the_primitives():
    loop = validate_plan('def plan(texts):\n    x = get_label(texts, "Is it?")\n'
                         '    for i in range(1000000000000):\n        pass\n    return [None] * len(texts)\n')
    slow_ok = validate_plan('def plan(texts):\n    x = get_label(texts, "Is it?")\n    y = get_label(texts, "Is it?")\n'
                            '    return [None] * len(texts)\n')

    def slow_label(texts, q):
        time.sleep(0.4)
        return [True] * len(texts)

    with PlanWorker(PlanLimits(cpu_seconds=60, wall_seconds=0.3)) as worker:
        assert worker.run(slow_ok, DOCS, slow_label, genre_span) == [None] * 3  # 0.8 s in primitives
        started = time.monotonic()
        with pytest.raises(PlanLimitError, match=r"^plan exceeded its 0\.3 s wall-clock limit$") as info:
            worker.run(loop, DOCS, game_label, genre_span)
        assert info.value.limit == "wall" and time.monotonic() - started < 10


def test_primitive_errors_fail_the_batch_like_in_process():
    plan = validate_plan(GAME_PLAN)

    def boom(texts, q):
        raise ValueError("model exploded")

    with pytest.raises(PlanRuntimeError) as info:
        run_plan_isolated(plan, DOCS, boom, genre_span, TIGHT)
    assert str(info.value) == ("plan raised ValueError at line 2 (`is_game = get_label(texts, "
                               "\"Is this package a game?\")`): model exploded")
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(PlanRuntimeError, match="returned 1 labels for 3 texts") as info:
        run_plan_isolated(plan, DOCS, lambda t, q: [True], genre_span, TIGHT)
    with pytest.raises(PlanRuntimeError, match="returned 1 labels for 3 texts"):
        run_plan(plan, DOCS, lambda t, q: [True], genre_span)


def test_numpy_answers_of_a_model_are_accepted_as_plain_numbers():
    plan = validate_plan(GAME_PLAN)

    def np_label(texts, q):
        return list(np.array(game_label(texts, q)))

    def np_span(texts, q):
        return [[Span(np.int64(s.start), np.int64(s.end), s.text, np.float32(0.5)) for s in row]
                for row in genre_span(texts, q)]

    for run in (run_plan, run_plan_isolated):
        out = run(plan, DOCS, np_label, np_span)
        span = out[0]["genre"][0]
        assert span == Span(19, 25, "puzzle", 0.5) and type(span.start) is int and type(span.score) is float


def test_mine_batch_rejects_only_the_document_that_crashes_the_plan():
    boom = validate_plan('def plan(texts):\n    x = get_label(texts, "Is it?")\n    t = ()\n'
                         '    n = 1000000 if "BOOM" in texts else 0\n'
                         '    for i in range(n):\n        t = (t,)\n    d = {t: 1}\n'
                         '    return [{"game": f} for f in x]\n')
    batch = [Document("a", DOCS[0]), Document("b", "BOOM"), Document("c", DOCS[2])]
    logs: list[str] = []
    out = mine_batch(boom, batch, game_label, genre_span, log=logs.append, limits=TIGHT)
    assert [(r.doc_id, r.value) for r in out.rows] == [("a", "true"), ("c", "true")]
    assert [(r.doc_id, r.reason) for r in out.rejects] == [("b", "plan error: plan process died with SIGSEGV")]
    assert "plan process died with SIGSEGV" in logs[0]
    rows, rejects, stats = mine_documents(boom, batch, game_label, genre_span, limits=TIGHT, in_process=False)
    assert (stats.docs_processed, stats.docs_rejected) == (2, 1)


def test_mine_batch_rejects_spans_put_on_the_wrong_document():
    swap = validate_plan('def plan(texts):\n    s = get_span(texts, "Who?")\n'
                         '    return [{"who": s[len(s) - 1 - i]} for i in range(len(s))]\n')
    batch = [Document("a", DOCS[0]), Document("b", DOCS[2])]
    for in_process in (False, True):
        logs: list[str] = []
        out = mine_batch(swap, batch, game_label, genre_span, log=logs.append, in_process=in_process)
        assert "result item 0 field 'who' span 0 'strategy' at [13, 21) does not match its document's text" in logs[0]
        # one document at a time the swap is the identity: the rows are right, never the swapped spans
        assert out.rejects == [] and [(r.doc_id, r.value) for r in out.rows] == [("a", "puzzle"), ("b", "strategy")]


def test_plan_limits_are_checked():
    with pytest.raises(ValueError, match="memory_mib"):
        PlanLimits(memory_mib=10)
    with pytest.raises(ValueError, match="cpu_seconds"):
        PlanLimits(cpu_seconds=0)
    with pytest.raises(ValueError, match="max_spans_per_doc"):
        PlanLimits(max_spans_per_doc=0)


def test_a_worker_that_cannot_start_is_an_error_of_its_own(monkeypatch):
    import falconer_assets.plan.worker as worker_module
    from falconer_assets.plan.worker import PlanWorkerError

    monkeypatch.setattr(worker_module, "_ROOT", "/nonexistent")  # the child cannot import falconer_assets
    with PlanWorker(TIGHT) as worker, pytest.raises(PlanWorkerError, match="ModuleNotFoundError"):
        worker.run(validate_plan(GAME_PLAN), DOCS, game_label, genre_span)
    assert not issubclass(PlanWorkerError, PlanRuntimeError)  # mining fails loudly, it does not reject every document


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_the_worker_process_has_no_site_packages_and_its_own_limits():
    with PlanWorker(TIGHT) as worker:
        worker.run(validate_plan(GAME_PLAN), DOCS, game_label, genre_span)
        maps = open(f"/proc/{worker.pid}/maps").read()
        limits = open(f"/proc/{worker.pid}/limits").read()
        environ = open(f"/proc/{worker.pid}/environ", "rb").read().split(b"\0")
    assert "site-packages" not in maps and "torch" not in maps and "numpy" not in maps
    assert b"PYTHONHASHSEED=0" in environ and not any(e.startswith(b"PYTHONPATH=") for e in environ)
    address_space = next(line for line in limits.splitlines() if line.startswith("Max address space"))
    assert address_space.split()[3:5] == [str(256 * 2**20)] * 2
    file_size = next(line for line in limits.splitlines() if line.startswith("Max file size"))
    assert file_size.split()[3:5] == ["0", "0"]
