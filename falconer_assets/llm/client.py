"""``ChatLLM``: a cached OpenAI-compatible chat client, with an embedded local model by default.

This holds the logic behind the Dagster ``LLMResource`` (``falconer_assets.resources.llm``),
so non-Dagster code (benchmarks, notebooks) can use the same thing::

    with ChatLLM(model="qwen2.5-coder-0.5b", cache_path="data/llm_cache.duckdb") as llm:
        r = llm.chat([{"role": "user", "content": "Is 0 A.D. a game? Answer Yes or No."}])
        r.text, r.cached, r.latency_s

* ``base_url=None``: the model is an embedded one (a key of
  :data:`~falconer_assets.llm.embedded.EMBEDDED_MODELS`, or a ``.gguf`` path), served by a
  :class:`~falconer_assets.llm.embedded.LlamaServer` that is started lazily on the first
  cache *miss* (a fully cached re-run never loads the model) and stopped by :meth:`close`.
* ``base_url="https://api.openai.com/v1"`` (or any OpenAI-compatible server): ``model`` is the
  remote model name, e.g. ``"gpt-4.1-mini"``.

Requests go through ``openai.OpenAI(...).chat.completions.create`` (OpenAI chat completions API,
https://platform.openai.com/docs/api-reference/chat/create; llama.cpp's server implements the
same endpoint). Every result is stored in an :class:`~falconer_assets.llm.cache.LLMCache`
keyed by the model identity, the messages and all request parameters (temperature, max_tokens,
seed=0 and any extra ones). No Dagster imports here.

Faults: HTTP 429 (``Retry-After`` honoured), 408/409/5xx, timeouts and refused connections are retried
by the openai client itself (``max_retries``, backoff 0.5 s doubling up to 8 s with jitter); an HTTP 200
whose body is not a chat completion (HTML, JSON without ``choices``, cut-off JSON) is retried here with
the same backoff, and never cached. Every attempt is counted in :class:`LLMStats` (``retries``,
``rate_limited``, ``server_errors``, ``no_response``, ``garbage_responses``, ``failures``). An embedded
server that dies is restarted once per call; every answer obtained before is in the cache already.
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai

from falconer_assets.llm.cache import LLMCache
from falconer_assets.llm.embedded import EMBEDDED_MODELS, LlamaServer, ensure_gguf, model_identity


@dataclass(frozen=True)
class ChatResult:
    """One chat answer.

    Attributes:
        text: the assistant message content ('' if the model returned none).
        prompt_tokens: prompt tokens reported by the server (usage.prompt_tokens).
        completion_tokens: generated tokens reported by the server (usage.completion_tokens).
        latency_s: wall-clock seconds of the original HTTP call (also when served from cache).
        cached: True if this came from the cache and no model was called.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool


@dataclass
class LLMStats:
    """Counters since the client was made.

    ``calls`` = ``cache_hits`` + ``api_calls``; ``prompt_tokens``/``completion_tokens`` sum all
    results (cached ones included, i.e. what the run *used*), the ``api_*`` fields only the
    calls actually sent (what the run *spent*, seconds for latency). ``server_starts`` counts
    embedded-server (re)starts; ``server_load_s`` their total load time in seconds.

    Faults (HTTP attempts, not calls): ``retries`` counts attempts beyond the first of each call (by the
    openai client or for a garbage answer); ``rate_limited`` the HTTP 429 answers, ``server_errors`` the
    HTTP 5xx ones, ``no_response`` the attempts that got no HTTP answer (timed out after ``timeout_s``, or
    the connection was refused or cut, e.g. a dead server), ``garbage_responses`` the HTTP 200 answers whose
    body was not a chat completion; ``failures`` counts the calls that failed for good (raised after every
    retry and restart).
    """

    calls: int = 0
    cache_hits: int = 0
    api_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    api_prompt_tokens: int = 0
    api_completion_tokens: int = 0
    api_latency_s: float = 0.0
    server_starts: int = 0
    server_load_s: float = 0.0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    no_response: int = 0
    garbage_responses: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of the counters (e.g. for Dagster metadata)."""
        return asdict(self)


def _check_messages(messages: list[dict]) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"bad chat message {m!r}: need {{'role': str, 'content': str}}")

class GarbageResponseError(openai.OpenAIError):
    """The server kept answering HTTP 200 with a body that is not a chat completion (after every retry)."""


def garbage_reason(resp: Any) -> str | None:
    """Why ``resp`` (what ``chat.completions.create`` returned) is not a usable chat completion, or ``None``.

    Usable: a ``choices`` list with at least one choice that has a ``message`` whose ``content`` is a string
    or ``None`` (no text). A non-JSON body comes back from the openai client as a ``str``; JSON without
    ``choices`` as a completion whose ``choices`` is ``None``.
    """
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or not choices:
        shown = resp if isinstance(resp, str) else getattr(resp, "model_extra", None) or resp
        text = repr(shown)
        return f"no choices in the answer {text[:120]}{'...' if len(text) > 120 else ''}"
    message = getattr(choices[0], "message", None)
    if message is None:
        return "the first choice has no message"
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        return f"the message content is a {type(content).__name__}, not text"
    return None


class _Attempts(threading.local):
    """HTTP attempts of the call running in this thread: requests sent and the status of each answer."""

    def __init__(self) -> None:
        self.requests = 0
        self.statuses: list[int] = []


REMOTE_CONCURRENCY = 8
"""Requests :meth:`ChatLLM.chat_many` keeps in flight against a remote OpenAI-compatible server by
default: servers such as vLLM or OpenAI batch concurrent requests; 8 stays under the usual per-key
rate limits of hosted APIs for short annotation prompts (raise it with ``max_concurrency``)."""


class ChatLLM:
    """A cached chat-completions client for an embedded or a remote OpenAI-compatible model.

    Args:
        model: with ``base_url=None``, a key of ``EMBEDDED_MODELS`` (``"qwen2.5-coder-1.5b"``,
            ``"qwen2.5-coder-0.5b"``) or a path to a ``.gguf`` file; otherwise the remote model
            name (e.g. ``"gpt-4.1-mini"``).
        base_url: OpenAI-compatible base URL (``.../v1``), or None for the embedded server.
        api_key: key for the remote server (ignored for the embedded one, which gets a random key).
        temperature, max_tokens, seed: default request parameters (``chat`` may override them).
        cache_path: DuckDB cache file, or None for no cache.
        timeout_s: per-request HTTP timeout in seconds.
        n_ctx, n_threads: embedded server context size (tokens) and CPU threads (None = all cores).
        max_retries: retries of one call: the openai client's on timeouts, connection errors, 408/409/429/5xx
            (backoff 0.5 s doubling up to 8 s, ``Retry-After`` honoured), and this client's on garbage answers.
        retry_delay_s: first backoff delay of the garbage-answer retries, seconds (doubling, at most 8 s).
        n_parallel: request slots of the embedded server (llama.cpp ``--parallel``); ignored remotely.
        max_concurrency: requests :meth:`chat_many` keeps in flight; ``None``: ``n_parallel`` for the
            embedded server (more would only queue), :data:`REMOTE_CONCURRENCY` for a remote one.

    Raises (from :meth:`chat`): ``ValueError`` for malformed messages; ``openai.OpenAIError``
    subclasses for HTTP failures after every retry (``GarbageResponseError`` for answers that are not
    chat completions); ``ModelNotInstalledError`` / ``LlamaServerError`` when the embedded model cannot
    be assembled or started.
    """

    def __init__(
        self,
        model: str = "qwen2.5-coder-1.5b",
        base_url: str | None = None,
        api_key: str = "sk-no-key",
        *,
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = 0,
        cache_path: str | Path | None = "data/llm_cache.duckdb",
        timeout_s: float = 900.0,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        max_retries: int = 2,
        n_parallel: int = 1,
        max_concurrency: int | None = None,
        retry_delay_s: float = 0.5,
    ) -> None:
        if base_url is None and model not in EMBEDDED_MODELS and not model.endswith(".gguf"):
            raise ValueError(
                f"model {model!r} is not an embedded model ({sorted(EMBEDDED_MODELS)}) or a .gguf path; "
                "set base_url to use a remote model"
            )
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        self.api_key = api_key
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.seed = seed
        self.timeout_s = float(timeout_s)
        self.n_ctx = int(n_ctx)
        self.n_threads = n_threads
        self.max_retries = int(max_retries)
        self.retry_delay_s = float(retry_delay_s)
        if int(n_parallel) < 1 or (max_concurrency is not None and int(max_concurrency) < 1):
            raise ValueError(f"n_parallel and max_concurrency must be >= 1, got {n_parallel}, {max_concurrency}")
        self.n_parallel = int(n_parallel)
        self.max_concurrency = int(max_concurrency) if max_concurrency is not None else (
            self.n_parallel if base_url is None else REMOTE_CONCURRENCY)
        self.cache = LLMCache(cache_path) if cache_path is not None else None
        self.stats = LLMStats()
        self._server: LlamaServer | None = None
        self._client: openai.OpenAI | None = None
        self._lock = threading.RLock()
        self._attempts = _Attempts()

    # -- identity / parameters ---------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """True when the model is served by the embedded llama.cpp server."""
        return self.base_url is None

    @property
    def identity(self) -> str:
        """Model identity used in cache keys: ``"embedded:<name>@<pkg>==<ver>"`` or ``"<model>@<base_url>"``."""
        if self.embedded:
            return "embedded:" + model_identity(self.model)
        return f"{self.model}@{self.base_url}"

    def request_params(self, **params: Any) -> dict[str, Any]:
        """Default request parameters overridden by ``params`` (all of it goes into the cache key)."""
        req: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            req["seed"] = self.seed
        req.update(params)
        return req

    # -- server / client ------------------------------------------------------------------
    @property
    def server(self) -> LlamaServer | None:
        """The embedded server if it has been started (None before the first cache miss)."""
        return self._server

    def _get_client(self) -> openai.OpenAI:
        """The openai client, starting the embedded server first if needed."""
        with self._lock:
            if self.embedded:
                if self._server is None or not self._server.running:
                    self._start_server()
            if self._client is None:
                if self.embedded:
                    assert self._server is not None
                    url, key = self._server.base_url, self._server.api_key
                else:
                    url, key = self.base_url, self.api_key
                attempts = self._attempts  # every HTTP attempt of the openai client's retry loop, per thread
                http_client = openai.DefaultHttpxClient(event_hooks={
                    "request": [lambda _request: setattr(attempts, "requests", attempts.requests + 1)],
                    "response": [lambda response: attempts.statuses.append(response.status_code)]})
                self._client = openai.OpenAI(
                    base_url=url, api_key=key, timeout=self.timeout_s, max_retries=self.max_retries,
                    http_client=http_client,
                )
            return self._client

    def _start_server(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._client = None
        path = ensure_gguf(self.model)
        name = Path(self.model).stem if self.model.endswith(".gguf") else self.model
        server = LlamaServer(path, n_ctx=self.n_ctx, n_threads=self.n_threads, alias=name, n_parallel=self.n_parallel)
        server.start()
        self._server = server
        self.stats.server_starts += 1
        self.stats.server_load_s += server.load_time_s or 0.0

    # -- the call -------------------------------------------------------------------------
    def chat(self, messages: list[dict], *, use_cache: bool = True, **params: Any) -> ChatResult:
        """Answer ``messages`` (OpenAI chat format: ``[{"role": "system"|"user"|"assistant", "content": str}]``).

        ``params`` override/add request parameters (``temperature``, ``max_tokens``, ``stop``, ...).
        With ``use_cache`` the cache is read first and written after a successful call; nothing
        is cached on error. If the embedded server has died, it is restarted once.
        """
        return self.chat_many([messages], use_cache=use_cache, **params)[0]

    def chat_many(self, batch: list[list[dict]], *, use_cache: bool = True, max_concurrency: int | None = None,
                  **params: Any) -> list[ChatResult]:
        """Answer every conversation of ``batch``, up to ``max_concurrency`` requests at once.

        Each conversation is answered exactly as :meth:`chat` would (same cache key, same retries,
        same token accounting); the results keep ``batch``'s order. Cache hits are served first;
        the misses go to the server from a thread pool of ``max_concurrency`` (default: the
        client's :attr:`max_concurrency`), and each answer is cached as soon as it arrives, so a
        failure keeps every answer that came before it.

        Raises:
            ValueError: a malformed conversation (checked before any call) or ``max_concurrency < 1``.
            openai.OpenAIError: the first failed call (after the client's retries; ``GarbageResponseError``
                when the answers were not chat completions), once the calls already in flight have finished.
            LlamaServerError: the embedded server died and could not be restarted.
        """
        for messages in batch:
            _check_messages(messages)
        workers = self.max_concurrency if max_concurrency is None else int(max_concurrency)
        if workers < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {workers}")
        req = self.request_params(**params)
        ident = self.identity
        out: list[ChatResult | None] = [None] * len(batch)
        misses = []
        for i, messages in enumerate(batch):
            hit = self.cache.get(ident, messages, req) if use_cache and self.cache is not None else None
            if hit is None:
                misses.append(i)
                continue
            out[i] = ChatResult(hit.response, hit.prompt_tokens, hit.completion_tokens, hit.latency_s, True)
            self._count(out[i])

        def answer(i: int) -> ChatResult:
            messages = batch[i]
            try:
                try:
                    res = self._call(messages, req)
                except openai.APIConnectionError:
                    if not (self.embedded and self._server is not None and not self._server.running):
                        raise
                    res = self._call(messages, req)  # the embedded server died: _get_client restarts it
            except Exception:
                with self._lock:
                    self.stats.failures += 1
                raise
            if use_cache and self.cache is not None:
                self.cache.put(ident, messages, req, res.text, res.prompt_tokens, res.completion_tokens,
                               res.latency_s)
            self._count(res)
            return res

        if len(misses) == 1 or workers == 1:
            for i in misses:
                out[i] = answer(i)
        elif misses:
            with ThreadPoolExecutor(max_workers=min(workers, len(misses)), thread_name_prefix="falconer-llm") as pool:
                futures = {i: pool.submit(answer, i) for i in misses}
            for i, future in futures.items():  # the pool has finished: every future is done
                out[i] = future.result()
        return out  # type: ignore[return-value]

    def _call(self, messages: list[dict], req: dict[str, Any]) -> ChatResult:
        """One call: the openai client's request (with its HTTP retries), retried here while the answer is
        garbage (:func:`garbage_reason`), at most ``max_retries`` times; every attempt is counted."""
        retry = 0
        t0 = time.perf_counter()
        while True:
            client = self._get_client()
            model = self._server.alias if (self.embedded and self._server) else self.model
            self._attempts.requests, self._attempts.statuses = 0, []
            try:
                resp = client.chat.completions.create(model=model, messages=messages, **req)
                problem = garbage_reason(resp)
            except json.JSONDecodeError as e:  # a cut-off or malformed JSON body
                resp, problem = None, f"the body is not valid JSON ({e})"
            finally:
                self._count_attempts()
            if problem is None:
                break
            with self._lock:
                self.stats.garbage_responses += 1
                if retry < self.max_retries:
                    self.stats.retries += 1
            if retry >= self.max_retries:
                where = "the embedded server" if self.embedded else self.base_url
                raise GarbageResponseError(f"{where} answered with something that is not a chat completion "
                                           f"{retry + 1} times (last: {problem})")
            time.sleep(min(self.retry_delay_s * 2 ** retry, 8.0) * (1 - 0.25 * random.random()))
            retry += 1
        latency = time.perf_counter() - t0
        text = resp.choices[0].message.content or ""
        usage = resp.usage
        return ChatResult(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            latency_s=latency,
            cached=False,
        )

    def _count_attempts(self) -> None:
        """Fold this thread's HTTP attempts of one ``create`` into :attr:`stats`."""
        a = self._attempts
        with self._lock:
            s = self.stats
            s.retries += max(a.requests - 1, 0)
            s.rate_limited += sum(code == 429 for code in a.statuses)
            s.server_errors += sum(code >= 500 for code in a.statuses)
            s.no_response += max(a.requests - len(a.statuses), 0)

    def _count(self, res: ChatResult) -> None:
        with self._lock:
            s = self.stats
            s.calls += 1
            s.prompt_tokens += res.prompt_tokens
            s.completion_tokens += res.completion_tokens
            if res.cached:
                s.cache_hits += 1
            else:
                s.api_calls += 1
                s.api_prompt_tokens += res.prompt_tokens
                s.api_completion_tokens += res.completion_tokens
                s.api_latency_s += res.latency_s

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the embedded server (if started) and drop the HTTP client. Idempotent; the
        client stays usable (a later cache miss starts the server again)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._server is not None:
                self._server.stop()
                self._server = None

    def __enter__(self) -> "ChatLLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "embedded" if self.embedded else self.base_url
        return f"ChatLLM(model={self.model!r}, {where}, calls={self.stats.calls}, hits={self.stats.cache_hits})"
