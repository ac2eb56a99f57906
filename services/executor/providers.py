"""Provider calls through the official SDKs: one pooled client per deployment.

The SDKs' own retries are off (``max_retries=0``, shared/sdk.py): retries live
in one place, the executor. Each call yields text deltas as they arrive (one delta for a
non-streamed call) and ends with a ``Final``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import msgspec
import openai

from services.executor import retry, wire
from shared.errors import ContextTooLong, InvalidRequest, LockgateError, RateLimited, UpstreamError
from shared.schemas.chat import ChatRequest, ToolCall, Usage, cached_details
from shared.schemas.mesh import Deployment
from shared.sdk import anthropic_client, api_key, openai_client
from shared.subjects import EXECUTOR

_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


@dataclass(slots=True)
class Final:
    finish_reason: str | None
    usage: Usage
    tool_calls: list[ToolCall] | None = None


class Clients:
    """One SDK client (and so one HTTP connection pool) per deployment."""

    def __init__(self) -> None:
        self._openai: dict[str, openai.AsyncOpenAI] = {}
        self._anthropic: dict[str, anthropic.AsyncAnthropic] = {}

    @staticmethod
    def _key(dep: Deployment) -> str:
        key = api_key(dep.api_key_env)
        if key is None:
            raise UpstreamError(f"deployment {dep.name}: {dep.api_key_env} is not set", stage=EXECUTOR)
        return key

    def openai(self, dep: Deployment) -> openai.AsyncOpenAI:
        client = self._openai.get(dep.name)
        if client is None:
            client = openai_client(dep.base_url, self._key(dep))
            self._openai[dep.name] = client
        return client

    def anthropic(self, dep: Deployment) -> anthropic.AsyncAnthropic:
        client = self._anthropic.get(dep.name)
        if client is None:
            client = anthropic_client(dep.base_url, self._key(dep))
            self._anthropic[dep.name] = client
        return client

    async def close(self) -> None:
        for c in self._openai.values():
            await c.close()
        for a in self._anthropic.values():
            await a.close()


def classify(exc: BaseException, dep: Deployment) -> LockgateError:
    """Map an SDK failure to our vocabulary; ``retryable`` says whether trying again may help."""
    where = f"deployment {dep.name}"
    if isinstance(exc, LockgateError):
        return exc
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        status = exc.status_code
        message = _provider_message(exc)
        hint = retry.retry_after_ms(exc.response.headers)
        if status == 429:
            return RateLimited(f"{where} is rate limited: {message}", stage=EXECUTOR, retry_after_ms=hint)
        if status == 400 and "context" in message.lower():
            return ContextTooLong(f"{where}: {message}", stage=EXECUTOR)
        if status in (400, 422):
            return InvalidRequest(f"{where} rejected the request: {message}", stage=EXECUTOR)
        return UpstreamError(
            f"{where} answered HTTP {status}: {message}",
            stage=EXECUTOR,
            retryable=retry.status_retryable(status),
            retry_after_ms=hint if retry.status_retryable(status) else None,
        )
    if is_timeout(exc):
        return UpstreamError(f"{where} timed out", stage=EXECUTOR)
    if isinstance(exc, openai.APIConnectionError | anthropic.APIConnectionError):
        return UpstreamError(f"{where} is unreachable", stage=EXECUTOR)
    return UpstreamError(f"{where} sent a malformed answer ({type(exc).__name__})", stage=EXECUTOR)


def is_timeout(exc: BaseException) -> bool:
    """Whether an attempt ended because its time ran out (our timer or the SDK's)."""
    return isinstance(exc, TimeoutError | openai.APITimeoutError | anthropic.APITimeoutError)


def _provider_message(exc: openai.APIStatusError | anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:300]
    return str(exc.message)[:300]


def _openai_kwargs(req: ChatRequest, dep: Deployment) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "model": dep.provider_model,
        "messages": msgspec.to_builtins(req.messages),
    }
    cap = req.output_cap
    if cap is not None:
        kw["max_tokens"] = min(cap, dep.max_output_tokens)
    for name in ("temperature", "top_p", "seed", "stop", "tool_choice", "tools"):
        value = getattr(req, name)
        if value is not None:
            kw[name] = msgspec.to_builtins(value)
    fmt = req.response_format
    if fmt is not None:
        kw["response_format"] = rf = msgspec.to_builtins(fmt)
        if fmt.json_schema is not None:
            # OpenAI requires json_schema.name; our contract omits the default name on the wire.
            rf["json_schema"] = {"name": fmt.json_schema.name, **rf["json_schema"]}
    return kw


async def call_openai(
    client: openai.AsyncOpenAI, req: ChatRequest, dep: Deployment, timeout_s: float, stream: bool
) -> AsyncIterator[str | Final]:
    kw = _openai_kwargs(req, dep)
    if not stream:
        raw = await client.post("/chat/completions", body=kw, cast_to=httpx2.Response, options={"timeout": timeout_s})
        resp = wire.openai_completion.decode(raw.content)
        if not resp.choices:
            raise UpstreamError(f"deployment {dep.name} answered with no choices", stage=EXECUTOR)
        choice = resp.choices[0]
        if choice.message.content:
            yield choice.message.content
        u = resp.usage or wire.OpenAIUsage()
        cached = (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0
        usage = Usage(
            prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, total_tokens=u.total_tokens,
            prompt_tokens_details=cached_details(cached),
        )  # fmt: skip
        yield Final(finish_reason=choice.finish_reason, usage=usage, tool_calls=choice.message.tool_calls or None)
        return
    chunks = await client.chat.completions.create(
        **kw, stream=True, stream_options={"include_usage": True}, timeout=timeout_s
    )
    finish: str | None = None
    usage = Usage()
    async for chunk in chunks:
        if chunk.usage is not None:
            details = chunk.usage.prompt_tokens_details
            usage = Usage(
                prompt_tokens=chunk.usage.prompt_tokens,
                completion_tokens=chunk.usage.completion_tokens,
                total_tokens=chunk.usage.total_tokens,
                prompt_tokens_details=cached_details((details.cached_tokens or 0) if details else 0),
            )
        for ch in chunk.choices:
            if ch.delta.content:
                yield ch.delta.content
            if ch.finish_reason:
                finish = ch.finish_reason
    yield Final(finish_reason=finish, usage=usage)


def _anthropic_kwargs(req: ChatRequest, dep: Deployment) -> dict[str, Any]:
    system = "\n\n".join(m.text() for m in req.messages if m.role in ("system", "developer"))
    messages = [{"role": m.role, "content": m.text()} for m in req.messages if m.role in ("user", "assistant")]
    kw: dict[str, Any] = {
        "model": dep.provider_model,
        "messages": messages,
        "max_tokens": min(req.output_cap or dep.max_output_tokens, dep.max_output_tokens),
    }
    if system:
        kw["system"] = system
    # No temperature/top_p: the Messages API version the anthropic 2.x SDK speaks refuses any
    # sampling parameter (and the SDK no longer accepts them), so they cannot be forwarded.
    if req.stop is not None:
        kw["stop_sequences"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    return kw


async def call_anthropic(
    client: anthropic.AsyncAnthropic, req: ChatRequest, dep: Deployment, timeout_s: float, stream: bool
) -> AsyncIterator[str | Final]:
    kw = _anthropic_kwargs(req, dep)
    if not stream:
        raw = await client.post("/v1/messages", body=kw, cast_to=httpx2.Response, options={"timeout": timeout_s})
        msg = wire.anthropic_message.decode(raw.content)
        text = "".join(block.text for block in msg.content if block.type == "text")
        if text:
            yield text
        u = msg.usage
        # Anthropic counts cache reads and writes apart from input_tokens; ours are all prompt tokens.
        cached = u.cache_read_input_tokens or 0
        prompt = u.input_tokens + cached + (u.cache_creation_input_tokens or 0)
        yield Final(
            finish_reason=_STOP.get(msg.stop_reason or "", msg.stop_reason),
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=u.output_tokens,
                total_tokens=prompt + u.output_tokens,
                prompt_tokens_details=cached_details(cached),
            ),
        )
        return
    events = await client.messages.create(**kw, stream=True, timeout=timeout_s)
    prompt = completion = cached = 0
    finish: str | None = None
    async for ev in events:
        if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
            yield ev.delta.text
        elif ev.type == "message_start":
            mu = ev.message.usage
            cached = mu.cache_read_input_tokens or 0
            prompt = mu.input_tokens + cached + (mu.cache_creation_input_tokens or 0)
        elif ev.type == "message_delta":
            completion = ev.usage.output_tokens
            finish = _STOP.get(ev.delta.stop_reason or "", ev.delta.stop_reason)
    yield Final(
        finish_reason=finish,
        usage=Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=cached_details(cached),
        ),
    )


def call(
    clients: Clients, req: ChatRequest, dep: Deployment, timeout_s: float, stream: bool
) -> AsyncIterator[str | Final]:
    if dep.kind == "openai":
        return call_openai(clients.openai(dep), req, dep, timeout_s, stream)
    return call_anthropic(clients.anthropic(dep), req, dep, timeout_s, stream)


def cost(dep: Deployment, usage: Usage) -> float:
    """USD from the price table: uncached input, cached input (its own price, else the input price), output."""
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    cached_price = dep.price_in_per_mtok if dep.price_cached_in_per_mtok is None else dep.price_cached_in_per_mtok
    return (
        (usage.prompt_tokens - cached) * dep.price_in_per_mtok
        + cached * cached_price
        + usage.completion_tokens * dep.price_out_per_mtok
    ) / 1e6
