"""Provider plumbing: SDK errors to our vocabulary, Retry-After, request conversion (no network)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import msgspec
import openai
import pytest

from services.executor import providers
from shared.errors import ContextTooLong, InvalidRequest, LockgateError, RateLimited, UpstreamError
from shared.schemas.chat import ChatRequest, JsonSchemaSpec, Message, ResponseFormat, Usage, cached_details
from shared.schemas.mesh import Deployment

DEP = Deployment(name="dep-1", model="m", provider="p", kind="openai", provider_model="gpt-x", max_output_tokens=1000,
                 price_in_per_mtok=1.0, price_out_per_mtok=2.0)  # fmt: skip
CLAUDE = Deployment(name="dep-c", model="c", provider="a", kind="anthropic", provider_model="claude-x",
                    max_output_tokens=500)  # fmt: skip
REQUEST = httpx2.Request("POST", "http://provider.test/v1/chat/completions")


def response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, headers=headers or {}, request=REQUEST)


def openai_error(cls: type[openai.APIStatusError], status: int, message: str = "boom", **h: str) -> Exception:
    return cls(f"Error code: {status}", response=response(status, h), body={"error": {"message": message}})


def anthropic_error(cls: type[anthropic.APIStatusError], status: int, message: str = "boom", **h: str) -> Exception:
    body = {"type": "error", "error": {"type": "x", "message": message}}
    return cls(f"Error code: {status}", response=response(status, h), body=body)


SDK_CASES = [
    (openai_error(openai.RateLimitError, 429, "slow down"), RateLimited, "is rate limited: slow down"),
    (anthropic_error(anthropic.RateLimitError, 429, "slow down"), RateLimited, "is rate limited: slow down"),
    (openai_error(openai.BadRequestError, 400, "maximum context length exceeded"), ContextTooLong, "context length"),
    (anthropic_error(anthropic.BadRequestError, 400, "prompt is too long for the context"), ContextTooLong, "too long"),
    (openai_error(openai.BadRequestError, 400, "bad param"), InvalidRequest, "rejected the request: bad param"),
    (openai_error(openai.UnprocessableEntityError, 422, "nope"), InvalidRequest, "rejected the request: nope"),
    (openai_error(openai.AuthenticationError, 401, "bad key"), UpstreamError, "answered HTTP 401: bad key"),
    (anthropic_error(anthropic.PermissionDeniedError, 403), UpstreamError, "answered HTTP 403"),
    (openai_error(openai.NotFoundError, 404, "no such model"), UpstreamError, "HTTP 404: no such model"),
    (openai_error(openai.InternalServerError, 500), UpstreamError, "answered HTTP 500"),
    (openai_error(openai.InternalServerError, 503, "down"), UpstreamError, "answered HTTP 503: down"),
    (anthropic_error(anthropic.InternalServerError, 529, "Overloaded"), UpstreamError, "HTTP 529: Overloaded"),
    (openai.APITimeoutError(request=REQUEST), UpstreamError, "timed out"),
    (anthropic.APITimeoutError(request=REQUEST), UpstreamError, "timed out"),
    (TimeoutError(), UpstreamError, "timed out"),
    (openai.APIConnectionError(request=REQUEST), UpstreamError, "is unreachable"),
    (anthropic.APIConnectionError(request=REQUEST), UpstreamError, "is unreachable"),
    (ValueError("half a JSON"), UpstreamError, "malformed answer (ValueError)"),
]


@pytest.mark.parametrize(("exc", "cls", "needle"), SDK_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_classify(exc: Exception, cls: type[LockgateError], needle: str) -> None:
    err = providers.classify(exc, DEP)
    assert type(err) is cls
    assert needle in err.message
    assert "dep-1" in err.message
    assert err.stage == "executor"


def test_retryability_decides_the_fallback() -> None:
    assert providers.classify(openai_error(openai.RateLimitError, 429), DEP).retryable
    assert providers.classify(openai_error(openai.InternalServerError, 503), DEP).retryable
    assert providers.classify(TimeoutError(), DEP).retryable
    assert not providers.classify(openai_error(openai.BadRequestError, 400), DEP).retryable


def test_our_own_errors_pass_through() -> None:
    own = InvalidRequest("x", stage="executor")
    assert providers.classify(own, DEP) is own


def test_provider_message_falls_back_to_the_sdk_message() -> None:
    exc = openai.InternalServerError("Error code: 502 - gateway", response=response(502), body="<html>")
    assert "Error code: 502 - gateway" in providers.classify(exc, DEP).message
    long = openai_error(openai.InternalServerError, 500, "x" * 1000)
    assert len(providers.classify(long, DEP).message) < 400


@pytest.mark.parametrize(
    ("headers", "ms"),
    [
        ({"retry-after": "2"}, 2000),
        ({"retry-after": "0.5"}, 500),
        ({"retry-after-ms": "750"}, 750),
        ({"retry-after-ms": "750", "retry-after": "9"}, 750),  # the precise one wins
        ({"Retry-After": "3"}, 3000),  # header names are case-insensitive
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0),  # an HTTP date in the past: now
        ({"retry-after-ms": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], ms: int | None) -> None:
    err = providers.classify(openai_error(openai.RateLimitError, 429, **headers), DEP)
    assert err.retry_after_ms == ms
    err = providers.classify(anthropic_error(anthropic.RateLimitError, 429, **headers), DEP)
    assert err.retry_after_ms == ms


def test_is_timeout() -> None:
    assert providers.is_timeout(TimeoutError())
    assert providers.is_timeout(openai.APITimeoutError(request=REQUEST))
    assert providers.is_timeout(anthropic.APITimeoutError(request=REQUEST))
    assert not providers.is_timeout(openai.APIConnectionError(request=REQUEST))
    assert not providers.is_timeout(openai_error(openai.InternalServerError, 504))


# -- request conversion -----------------------------------------------------------------
def chat(**kw: Any) -> ChatRequest:
    kw.setdefault("messages", [Message(role="user", content="Hello")])
    return ChatRequest(**kw)


def test_openai_kwargs_minimal() -> None:
    kw = providers._openai_kwargs(chat(), DEP)
    assert kw == {"model": "gpt-x", "messages": [{"role": "user", "content": "Hello"}]}


def test_openai_kwargs_carry_the_sampling_and_cap_the_output() -> None:
    kw = providers._openai_kwargs(
        chat(max_tokens=5000, temperature=0.2, top_p=0.9, seed=7, stop=["\n"], tool_choice="auto",
             tools=[{"type": "function", "function": {"name": "f"}}]),
        DEP,
    )  # fmt: skip
    assert kw["max_tokens"] == 1000  # the deployment's limit
    assert (kw["temperature"], kw["top_p"], kw["seed"], kw["stop"]) == (0.2, 0.9, 7, ["\n"])
    assert kw["tool_choice"] == "auto"
    assert kw["tools"][0]["function"]["name"] == "f"
    assert providers._openai_kwargs(chat(max_completion_tokens=10), DEP)["max_tokens"] == 10


def test_openai_kwargs_keep_system_messages_in_place() -> None:
    msgs = [Message(role="system", content="Be brief."), Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello!"), Message(role="user", content="Again")]  # fmt: skip
    kw = providers._openai_kwargs(chat(messages=msgs), DEP)
    assert [m["role"] for m in kw["messages"]] == ["system", "user", "assistant", "user"]


def test_openai_json_schema_always_names_the_schema() -> None:
    """OpenAI requires ``response_format.json_schema.name``; a client may leave it out."""
    fmt = ResponseFormat(type="json_schema", json_schema=JsonSchemaSpec(schema_={"type": "object"}))
    kw = providers._openai_kwargs(chat(response_format=fmt), DEP)
    assert kw["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}},
    }
    named = ResponseFormat(type="json_schema", json_schema=JsonSchemaSpec(name="city", schema_={}, strict=True))
    kw = providers._openai_kwargs(chat(response_format=named), DEP)
    assert kw["response_format"]["json_schema"] == {"name": "city", "schema": {}, "strict": True}
    kw = providers._openai_kwargs(chat(response_format=ResponseFormat(type="json_object")), DEP)
    assert kw["response_format"] == {"type": "json_object"}


def test_anthropic_kwargs_move_system_messages_out() -> None:
    msgs = [Message(role="system", content="Be brief."), Message(role="developer", content="No jokes."),
            Message(role="user", content="Hi"), Message(role="assistant", content="Hello!"),
            Message(role="tool", content="ignored", tool_call_id="t1"), Message(role="user", content="Again")]  # fmt: skip
    kw = providers._anthropic_kwargs(chat(messages=msgs, max_tokens=100, stop="END"), CLAUDE)
    assert kw["system"] == "Be brief.\n\nNo jokes."
    assert kw["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
    ]
    assert kw["model"] == "claude-x"
    assert kw["max_tokens"] == 100
    assert kw["stop_sequences"] == ["END"]


def test_anthropic_kwargs_require_max_tokens_and_drop_sampling() -> None:
    kw = providers._anthropic_kwargs(chat(temperature=0.0, top_p=0.5), CLAUDE)
    assert kw["max_tokens"] == 500  # always sent: the deployment's cap when the client gives none
    assert "system" not in kw
    assert "temperature" not in kw  # the Messages API version of the anthropic 2.x SDK refuses sampling params
    assert "top_p" not in kw
    assert providers._anthropic_kwargs(chat(max_tokens=10_000), CLAUDE)["max_tokens"] == 500


def test_cost() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000, total_tokens=1_500_000)
    assert providers.cost(DEP, usage) == pytest.approx(1.0 + 1.0)
    assert providers.cost(CLAUDE, usage) == 0.0


def test_cost_prices_cached_prompt_tokens_apart() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=0, total_tokens=1_000_000,
                  prompt_tokens_details=cached_details(400_000))  # fmt: skip
    assert providers.cost(DEP, usage) == pytest.approx(1.0)  # no cached price: the input price
    cheap = msgspec.structs.replace(DEP, price_cached_in_per_mtok=0.25)
    assert providers.cost(cheap, usage) == pytest.approx(0.6 + 0.1)
