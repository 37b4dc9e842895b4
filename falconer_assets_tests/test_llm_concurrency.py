"""Concurrent LLM calls (issue 11, item 7): ``ChatLLM.chat_many`` keeps up to ``max_concurrency`` requests in
flight against a real HTTP server, with the cache, the order, the token accounting and the failure
behaviour of one-at-a-time ``chat``; the annotation flow sends a sub-task's docs through it.

The server is a small OpenAI-compatible HTTP server on 127.0.0.1 that answers after a delay, echoes the
question, records how many requests it holds at once, and fails any request whose question says FAIL.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from falconer_assets.llm.client import REMOTE_CONCURRENCY, ChatLLM
from falconer_assets.llm.executor import LLMPrimitives


class _SlowEcho:
    def __init__(self, delay_s: float = 0.2) -> None:
        self.requests: list[dict] = []
        self.in_flight = 0
        self.most_in_flight = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.requests.append(body)
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                time.sleep(delay_s)
                with lock:
                    outer.in_flight -= 1
                question = body["messages"][-1]["content"]
                if "FAIL" in question:
                    out, status = json.dumps({"error": {"message": "bad request", "type": "invalid"}}).encode(), 400
                else:
                    out, status = json.dumps({
                        "id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {question}"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}).encode(), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _SlowEcho()
    yield srv
    srv.close()


def _q(i) -> list[dict]:
    return [{"role": "user", "content": f"question {i}"}]


def test_chat_many_keeps_max_concurrency_requests_in_flight_in_order_and_cached(server, tmp_path):
    llm = ChatLLM(model="m", base_url=server.base_url, cache_path=tmp_path / "c.duckdb", max_concurrency=4)
    t0 = time.perf_counter()
    results = llm.chat_many([_q(i) for i in range(12)])
    elapsed = time.perf_counter() - t0
    assert [r.text for r in results] == [f"echo: question {i}" for i in range(12)]
    assert server.most_in_flight == 4 and len(server.requests) == 12
    assert elapsed < 12 * 0.2 * 0.6, elapsed  # 3 waves of 0.2 s, not 12 in a row
    s = llm.stats
    assert (s.calls, s.api_calls, s.cache_hits, s.prompt_tokens, s.completion_tokens) == (12, 12, 0, 120, 36)
    # again: every answer from the cache, nothing sent; mixed hits and misses keep the order
    again = llm.chat_many([_q(i) for i in range(14)])
    assert [r.cached for r in again] == [True] * 12 + [False] * 2 and len(server.requests) == 14
    assert [r.text for r in again] == [f"echo: question {i}" for i in range(14)]
    # chat is chat_many of one: same cache
    assert llm.chat(_q(3)).cached


def test_chat_many_defaults_and_rejects_bad_settings(server, tmp_path):
    assert ChatLLM(model="m", base_url=server.base_url, cache_path=None).max_concurrency == REMOTE_CONCURRENCY
    assert ChatLLM(model="qwen2.5-coder-0.5b", cache_path=None, n_parallel=3).max_concurrency == 3
    with pytest.raises(ValueError, match="max_concurrency"):
        ChatLLM(model="m", base_url=server.base_url, cache_path=None, max_concurrency=0)
    llm = ChatLLM(model="m", base_url=server.base_url, cache_path=None)
    with pytest.raises(ValueError):  # a malformed conversation: nothing is sent
        llm.chat_many([_q(0), [{"role": "user"}]])
    assert server.requests == []
    llm.chat_many([_q(i) for i in range(5)], max_concurrency=1)
    assert server.most_in_flight == 1


def test_a_failed_call_raises_after_the_others_are_cached(server, tmp_path):
    llm = ChatLLM(model="m", base_url=server.base_url, cache_path=tmp_path / "c.duckdb", max_concurrency=3,
                  max_retries=0)
    batch = [_q(0), _q(1), [{"role": "user", "content": "FAIL please"}], _q(3), _q(4)]
    with pytest.raises(openai.BadRequestError):
        llm.chat_many(batch)
    assert len(server.requests) == 5  # the calls in flight or queued all ran
    assert [r.cached for r in llm.chat_many([_q(i) for i in (0, 1, 3, 4)])] == [True] * 4


def test_llm_primitives_send_a_calls_texts_through_chat_many(server, tmp_path):
    llm = ChatLLM(model="m", base_url=server.base_url, cache_path=None, max_concurrency=4)
    prims = LLMPrimitives(llm.chat, llm.chat_many)
    labels = prims.get_label([f"text {i}" for i in range(8)], "Is it?")
    assert labels == [False] * 8  # "echo: ..." is neither yes nor no
    assert server.most_in_flight == 4 and len(prims.annotations) == 8
    assert all(not a.parse_ok and a.tokens == 13 for a in prims.annotations)
    # the texts keep their order: each answer echoes its own prompt
    assert all(f"text {i}" in a.raw for i, a in enumerate(prims.annotations))
