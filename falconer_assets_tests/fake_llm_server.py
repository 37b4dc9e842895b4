"""A fake OpenAI-compatible chat server for the fault tests (standard library only, starts in ~0.1 s).

It answers Falconer's annotation prompts (:mod:`falconer_assets.llm.prompts`) from the text itself: a label
question gets ``Yes`` when the text mentions "game", a question about a genre gets the first genre word of
the text (or ``NONE``). It can play faults, one per chat request, by request number (0-based):

* ``"429"``: HTTP 429 with ``Retry-After-Ms: 10``; ``"500"``: HTTP 500, also with ``Retry-After-Ms: 10``;
* ``"timeout"``: no answer for ``stall_s`` seconds, then the connection is closed;
* ``"garbage_html"``: HTTP 200 with an HTML body; ``"garbage_json"``: HTTP 200, JSON without ``choices``;
  ``"cut_json"``: HTTP 200 with JSON cut off mid-way.

Two ways to run it:

* in a thread of the test (:class:`FakeLLMServer`), for the retry tests;
* as a process following the embedded server's child protocol (``python fake_llm_server.py [--die-after N]
  [--log FILE]``: the API key from ``$FALCONER_LLAMA_API_KEY``, a ``{"port", "url"}`` line on stdout when
  ready, exit when stdin closes), started by :class:`~falconer_assets.llm.embedded.LlamaServer` in place of
  llama.cpp; ``--die-after N`` makes it ``SIGKILL`` itself on receiving chat request N+1 (after N answers).

Every answered request's key (SHA-256 of its messages) is recorded (:attr:`FakeLLMServer.answered`, or one
line per answer in ``--log``), so a test can check that no call was paid twice.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import signal
import sys
import threading
import time

GENRES = ("puzzle", "strategy", "arcade", "racing", "shooter", "platform", "adventure", "simulation", "roguelike")


def messages_key(messages: list[dict]) -> str:
    """SHA-256 of ``messages`` as sorted-key JSON (64 hex chars)."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def answer(messages: list[dict]) -> str:
    """The reply to one annotation prompt (see the module docstring)."""
    content = messages[-1]["content"]
    text = content.split('Text:\n"""\n', 1)[-1].split('\n"""', 1)[0].lower()
    question = content.split("Question:", 1)[-1].split("\n", 1)[0].lower()
    if "genre" in question:
        hits = sorted((text.find(g), g) for g in GENRES if g in text)
        return hits[0][1] if hits else "NONE"
    return "Yes" if "game" in text else "No"


def completion(text: str) -> bytes:
    """An OpenAI chat completion body holding ``text``."""
    return json.dumps({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }).encode()


class FakeLLMServer:
    """The fake server on ``127.0.0.1`` (a ``ThreadingHTTPServer``; :meth:`start` serves from a daemon thread).

    Args:
        faults: ``{chat request number: fault}`` (numbers from 0, in arrival order).
        api_key: required as ``Authorization: Bearer <key>`` when set.
        die_after: ``SIGKILL`` this process on chat request ``die_after + 1`` (process mode only).
        log_path: append each answered request's key to this file, one per line.
        stall_s: how long a ``"timeout"`` request stalls, seconds.
        port: TCP port, 0 = any free one.

    Attributes:
        requests: chat requests received so far; answered: keys of the requests answered, in order.
    """

    def __init__(self, faults: dict[int, str] | None = None, api_key: str | None = None, die_after: int | None = None,
                 log_path: str | None = None, stall_s: float = 1.5, port: int = 0) -> None:
        self.faults = dict(faults or {})
        self.api_key, self.die_after, self.log_path, self.stall_s = api_key, die_after, log_path, stall_s
        self.requests = 0
        self.answered: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json",
                      headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/health"):
                    self._send(200, b'{"status": "ok"}')
                else:
                    self._send(200, b'{"object": "list", "data": [{"id": "fake", "object": "model"}]}')

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._send(401, b'{"error": {"message": "bad key"}}')
                    return
                with server._lock:
                    n = server.requests
                    server.requests += 1
                if server.die_after is not None and n >= server.die_after:
                    os.kill(os.getpid(), signal.SIGKILL)  # kill -9, mid-annotation
                fault = server.faults.get(n)
                if fault in ("429", "500"):
                    self._send(int(fault), b'{"error": {"message": "try later"}}', headers={"Retry-After-Ms": "10"})
                elif fault == "timeout":
                    time.sleep(server.stall_s)
                    self.close_connection = True
                elif fault == "garbage_html":
                    self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
                elif fault == "garbage_json":
                    self._send(200, b'{"status": "queued"}')
                elif fault == "cut_json":
                    self._send(200, completion("Yes")[:40])
                else:
                    messages = body["messages"]
                    self._send(200, completion(answer(messages)))
                    key = messages_key(messages)
                    with server._lock:
                        server.answered.append(key)
                        if server.log_path:
                            with open(server.log_path, "a") as f:
                                f.write(key + "\n")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeLLMServer":
        """Serve from a daemon thread; returns ``self``."""
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    """Process mode: the embedded server's child protocol (see the module docstring)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--die-after", type=int, default=None)
    ap.add_argument("--log", default=None)
    ap.add_argument("--port", type=int, default=0)
    args, _ = ap.parse_known_args(argv)
    server = FakeLLMServer(api_key=os.environ.get("FALCONER_LLAMA_API_KEY"), die_after=args.die_after,
                           log_path=args.log, port=args.port).start()
    sys.stdout.write(json.dumps({"port": server.port, "url": f"http://127.0.0.1:{server.port}"}) + "\n")
    sys.stdout.flush()
    while sys.stdin.buffer.read(65536):  # the parent closes stdin (or dies): exit
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
