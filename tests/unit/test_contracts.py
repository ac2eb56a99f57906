"""The wire contract: Structs round-trip, old decoders read newer messages, required fields stay required."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from shared.schemas.budget import BudgetAlert, BudgetHold, BudgetLimits
from shared.schemas.chat import (
    AssistantMessage,
    Attempt,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ContentPart,
    JsonSchemaSpec,
    LockgateInfo,
    LockgateOptions,
    Message,
    ModelList,
    ResponseFormat,
    StreamDone,
    Usage,
)
from shared.schemas.errors import ErrorEnvelope
from shared.schemas.events import AuditRecord, CompletionEvent
from shared.schemas.mesh import (
    CachedCompletion,
    CacheResult,
    Deployment,
    ExecuteRequest,
    ExecuteResult,
    Reservation,
    RoutePlan,
    SettleRequest,
)

USAGE = Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12)
INFO = LockgateInfo(
    request_id="r1", route="default", deployment="sim-gpt", provider="sim-openai",
    attempts=[Attempt(deployment="down", outcome="upstream_error", latency_ms=3.5, error="503"),
              Attempt(deployment="sim-gpt", outcome="ok", latency_ms=12.0)],
    fallbacks=1, cost_usd=0.001, latency_ms={"executor": 12.5, "total": 14.0}, validation="valid",
)  # fmt: skip
REQUEST = ChatRequest(
    model="gpt-4o-mini",
    messages=[Message(role="system", content="Be brief."),
              Message(role="user", content=[ContentPart(type="text", text="Hi"),
                                            ContentPart(type="image_url", image_url={"url": "data:x"})])],
    max_tokens=100, temperature=0.0, top_p=1.0, stream=True, seed=3, stop=["\n"], user="u1",
    response_format=ResponseFormat(type="json_schema", json_schema=JsonSchemaSpec(name="x", schema_={"type": "object"})),
    tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="auto",
    lockgate=LockgateOptions(route="default", priority="high", max_latency_ms=900, cache="off", degrade=True,
                             metadata={"feature": "search", "prompt_version": "3"}),
)  # fmt: skip
RESPONSE = ChatResponse(
    id="chatcmpl-r1", created=1700000000, model="gpt-4o-mini",
    choices=[Choice(message=AssistantMessage(content="Hello"), finish_reason="stop")], usage=USAGE, lockgate=INFO,
)  # fmt: skip
HOLD = BudgetHold(id="res1", keys=["t.acme", "u.acme.u1"], day="d20260101", expires_s=1700000040, amount_usd=0.01)
EVENT = CompletionEvent(
    request_id="r1", tenant="acme", ts_ms=1700000000000, outcome="completed", user="u1", key_id="k1",
    model="gpt-4o-mini", route="default", deployment="sim-gpt", stream=True, usage=USAGE, cost_usd=0.001,
    reservation_id="res1", hold=HOLD, latency_ms=14.0,
    stage_latency_ms={"executor": 12.5}, attempts=INFO.attempts, validation="valid", cache_key="k" * 64,
    completion=CachedCompletion(content="Hello", model="gpt-4o-mini", usage=USAGE, deployment="sim-gpt"),
    metadata={"feature": "search"},
)  # fmt: skip
DEPLOYMENT = Deployment(name="d", model="m", provider="p", kind="openai", provider_model="pm", base_url="http://x/v1")

SAMPLES: list[Any] = [
    REQUEST,
    RESPONSE,
    EVENT,
    ChatChunk(id="c", created=1, model="m", choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content="He"))]),
    StreamDone(id="c", model="m", finish_reason="stop", usage=USAGE, chunks=3, lockgate=INFO),
    ModelList(data=[]),
    msgspec.json.decode(b'{"error": {"type": "forbidden", "message": "no"}}', type=ErrorEnvelope),
    ExecuteRequest(request=REQUEST, candidates=[DEPLOYMENT], response_id="chatcmpl-r1", stream_inbox="_INBOX.a"),
    ExecuteResult(content="Hi", usage=USAGE, model="m", deployment="d", provider="p", attempts=INFO.attempts, chunks=2),
    RoutePlan(route="default", candidates=[DEPLOYMENT]),
    Reservation(reservation_id="x", amount_usd=0.5, hold=HOLD, remaining_usd=1.5),
    BudgetAlert(
        tenant="acme",
        scope="user",
        entity="acme/alice",
        window="m202601",
        kind="threshold",
        limit_usd=1.0,
        spent_usd=0.8,
        threshold=0.8,
    ),
    BudgetLimits(daily_budget_usd=1.0, budget_mode="soft"),
    CacheResult(hit="exact", completion=EVENT.completion),
    AuditRecord(request_id="r1", tenant="acme", ts_ms=1, kind="refused", error_type="invalid_request"),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).__name__)
def test_round_trip(sample: Any) -> None:
    wire = msgspec.json.encode(sample)
    assert msgspec.json.decode(wire, type=type(sample)) == sample


def add_unknown_fields(value: Any) -> Any:
    """What a newer writer might send: an extra field in every Struct at every level (maps stay maps)."""
    if isinstance(value, msgspec.Struct):
        out = {}
        for field in msgspec.structs.fields(value):
            out[field.encode_name] = add_unknown_fields(getattr(value, field.name))
        out["field_from_the_future"] = {"nested": [1, 2, 3]}
        return out
    if isinstance(value, list):
        return [add_unknown_fields(v) for v in value]
    return msgspec.to_builtins(value)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).__name__)
def test_an_old_decoder_reads_a_newer_message(sample: Any) -> None:
    wire = msgspec.json.encode(add_unknown_fields(sample))
    assert wire.count(b"field_from_the_future") >= 1
    assert msgspec.json.decode(wire, type=type(sample)) == sample


def test_openai_sdk_request_with_parameters_we_do_not_model() -> None:
    wire = msgspec.json.encode({
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi", "refusal": None}],
        "n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {},
        "parallel_tool_calls": True, "service_tier": "auto", "store": False,
    })  # fmt: skip
    req = msgspec.json.decode(wire, type=ChatRequest)
    assert req.model == "gpt-4o-mini"
    assert req.messages[0].text() == "Hi"


def test_a_newer_decoder_reads_an_older_message() -> None:
    """Fields added later have defaults: a minimal message from an old writer still decodes."""
    req = msgspec.json.decode(b'{"messages": [{"role": "user", "content": "Hi"}]}', type=ChatRequest)
    assert req.lockgate == LockgateOptions()
    assert req.stream is False
    ev = msgspec.json.decode(b'{"request_id": "r", "tenant": "t", "ts_ms": 1, "outcome": "refused"}',
                             type=CompletionEvent)  # fmt: skip
    assert ev.completion is None
    assert ev.usage == Usage()
    info = msgspec.json.decode(b'{"request_id": "r"}', type=LockgateInfo)
    assert (info.cached, info.fallbacks, info.attempts) == ("", 0, [])


@pytest.mark.parametrize(
    ("tp", "wire", "missing"),
    [
        (ChatRequest, b'{"model": "m"}', "messages"),
        (Message, b'{"content": "hi"}', "role"),
        (
            ChatResponse,
            b'{"created": 1, "model": "m", "choices": [], "usage": {}, "lockgate": {"request_id": "r"}}',
            "id",
        ),
        (CompletionEvent, b'{"request_id": "r", "tenant": "t", "ts_ms": 1}', "outcome"),
        (ExecuteRequest, b'{"request": {"messages": []}, "candidates": []}', "response_id"),
        (ErrorEnvelope, b"{}", "error"),
    ],
)
def test_missing_required_fields_are_rejected_with_a_path(tp: type[Any], wire: bytes, missing: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"missing required field `{missing}`"):
        msgspec.json.decode(wire, type=tp)


def test_retyped_fields_are_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.lockgate\.priority"):
        msgspec.json.decode(b'{"messages": [], "lockgate": {"priority": "urgent"}}', type=ChatRequest)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.messages\[0\]\.content"):
        msgspec.json.decode(b'{"messages": [{"role": "user", "content": 42}]}', type=ChatRequest)


def test_wire_names_follow_openai() -> None:
    wire = msgspec.to_builtins(REQUEST)
    assert wire["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert "schema_" not in wire["response_format"]["json_schema"]
    minimal = msgspec.to_builtins(ChatRequest(messages=[Message(role="user", content="Hi")]))
    assert minimal == {"messages": [{"role": "user", "content": "Hi"}]}  # defaults stay off the wire
    resp = msgspec.to_builtins(RESPONSE)
    assert resp["object"] == "chat.completion"
    assert resp["choices"][0]["message"] == {"role": "assistant", "content": "Hello", "tool_calls": None}


def test_a_completion_event_decodes_as_the_settlement_it_carries() -> None:
    # The budgeter decodes completion events straight into SettleRequest (the answer is skipped):
    # the two must keep these field names and types.
    hold = BudgetHold(id="r1", keys=["t.acme", "u.acme.al"], day="d20260101", expires_s=1, amount_usd=0.5, tier="pro")
    ev = CompletionEvent(
        request_id="q", tenant="acme", user="al", key_id="k-1", ts_ms=1, outcome="completed", cost_usd=0.25,
        hold=hold, completion=CachedCompletion(content="a long answer " * 100, model="m"),
    )  # fmt: skip
    got = msgspec.json.decode(msgspec.json.encode(ev), type=SettleRequest)
    assert got == SettleRequest(tenant="acme", user="al", key_id="k-1", cost_usd=0.25, hold=hold)
    bare = CompletionEvent(request_id="q", tenant="acme", ts_ms=1, outcome="failed")
    assert msgspec.json.decode(msgspec.json.encode(bare), type=SettleRequest).hold is None
