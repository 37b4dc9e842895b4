"""Dagster resource for the LLM: a thin wrapper around :class:`falconer_assets.llm.client.ChatLLM`.

Default: the embedded Qwen2.5-Coder-1.5B served locally (no network, no key). A remote
OpenAI-compatible model::

    LLMResource(base_url="https://api.openai.com/v1", model="gpt-4.1-mini",
                api_key=dg.EnvVar("OPENAI_API_KEY"))

``dg.EnvVar`` reads the key from the environment at launch time, so it is never stored in
the run config or shown in the UI.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from falconer_assets.llm.client import ChatLLM, ChatResult, LLMStats

__all__ = ["LLMResource", "ChatResult", "LLMStats", "EMBEDDED_PARALLEL"]

EMBEDDED_PARALLEL = 1
"""Default request slots of the embedded server (see ``bench llm_concurrency`` in the README)."""


class LLMResource(dg.ConfigurableResource):
    """Cached chat completions from an embedded local model or an OpenAI-compatible server.

    The embedded server is started lazily on the first cache miss only (a fully cached
    re-run never loads the model) and stopped in ``teardown_after_execution``. Use
    :meth:`chat` in assets, or :meth:`get_client` for the underlying :class:`ChatLLM`.
    """

    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL (e.g. https://api.openai.com/v1); None = embedded local server.",
    )
    model: str = Field(
        default="qwen2.5-coder-1.5b",
        description="Embedded: a key of EMBEDDED_MODELS ('qwen2.5-coder-1.5b', 'qwen2.5-coder-0.5b') "
        "or a .gguf path. Remote: the model name, e.g. 'gpt-4.1-mini'.",
    )
    api_key: str = Field(
        default="sk-no-key",
        description="API key for the remote server; use dg.EnvVar('OPENAI_API_KEY'). Ignored when embedded.",
    )
    temperature: float = Field(default=0.0, description="Sampling temperature (0 = greedy).")
    max_tokens: int = Field(default=256, description="Max generated tokens per call.")
    cache_path: str = Field(default="data/llm_cache.duckdb", description="DuckDB file caching every call.")
    timeout_s: float = Field(
        default=900.0,
        description="Per-request HTTP timeout, seconds (a 768-token plan from the embedded 1.5B on 2 busy cores can take minutes).",
    )
    n_ctx: int = Field(default=4096, description="Embedded server context window, tokens.")
    n_threads: int | None = Field(default=None, description="Embedded server CPU threads; None = all cores.")
    n_parallel: int = Field(default=EMBEDDED_PARALLEL,
                            description="Embedded server request slots decoded together (llama.cpp --parallel).")
    max_concurrency: int | None = Field(
        default=None, description="LLM requests in flight during annotation; None = n_parallel for the embedded "
        "server, 8 for a remote one (vLLM/OpenAI serve many at once).")

    max_retries: int = Field(
        default=2, description="Retries of one LLM call: on HTTP 429/5xx, timeouts and refused connections (the "
        "openai client's, backoff 0.5 s doubling up to 8 s, Retry-After honoured) and on answers that are not chat "
        "completions.")
    retry_delay_s: float = Field(default=0.5, description="First backoff delay, seconds, of the retries on answers "
                                 "that are not chat completions (doubling, at most 8 s).")

    _client: ChatLLM | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Build the client (cheap: opens the cache; the model is not loaded yet)."""
        self._client = self._make_client()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Stop the embedded server, if it was started, and log the call counters."""
        if self._client is not None:
            if context is not None and getattr(context, "log", None) is not None:
                context.log.info(f"LLM stats: {self._client.stats.as_dict()}")
            self._client.close()

    def _make_client(self) -> ChatLLM:
        return ChatLLM(
            model=self.model,
            base_url=self.base_url,
            api_key=self.api_key,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            cache_path=self.cache_path,
            timeout_s=self.timeout_s,
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            n_parallel=self.n_parallel,
            max_concurrency=self.max_concurrency,
            max_retries=self.max_retries,
            retry_delay_s=self.retry_delay_s,
        )

    def get_client(self) -> ChatLLM:
        """The underlying :class:`ChatLLM` (made on first use outside a Dagster run too;
        then call ``get_client().close()`` yourself to stop the embedded server)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def chat(self, messages: list[dict], **params: Any) -> ChatResult:
        """Answer OpenAI-format ``messages``; see :meth:`ChatLLM.chat` (``params`` override
        temperature/max_tokens/seed and are part of the cache key)."""
        return self.get_client().chat(messages, **params)

    def chat_many(self, batch: list[list[dict]], **params: Any) -> list[ChatResult]:
        """Answer several conversations, up to ``max_concurrency`` at once; see :meth:`ChatLLM.chat_many`."""
        return self.get_client().chat_many(batch, **params)

    @property
    def stats(self) -> LLMStats:
        """Counters: calls, cache_hits, api_calls, tokens, api latency, server starts, and the faults (retries,
        rate_limited, server_errors, no_response, garbage_responses, failures); see :class:`LLMStats`."""
        return self.get_client().stats
