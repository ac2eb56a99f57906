"""``shared.bus.Stage`` without NATS: concurrency, back-pressure, deadlines and the error envelope.

nats-py awaits a subscription's callback one message at a time, so the callback the
Stage hands to micro must return at once and run the request in its own task.
Requests here are real ``nats.micro`` Request objects over a fake client that
records what would have been published.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest
import structlog
from nats.aio.msg import Msg
from nats.micro.request import Request

from shared import bus, errors, headers
from shared.headers import RequestContext, now_ms
from shared.schemas.errors import ErrorEnvelope


class FakeClient:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, str] | None]] = []

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "", headers: Any = None) -> None:
        self.published.append((subject, payload, headers))


class FakeGroup:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    async def add_endpoint(self, *, name: str, subject: str | None = None, handler: Any) -> None:
        self.handlers[name] = handler


class Echo(msgspec.Struct):
    text: str
    delay_s: float = 0.0


def make_stage(max_in_flight: int = 100) -> bus.Stage:
    return bus.Stage(None, name="tester", version="0", max_in_flight=max_in_flight, default_timeout_ms=5_000)  # type: ignore[arg-type]


def request(client: FakeClient, data: bytes, *, deadline_ms: int | None = None, reply: str = "_INBOX.x") -> Request:
    ctx = RequestContext.new(timeout_ms=5_000, tenant="acme", request_id="req-1")
    h = ctx.to_headers()
    if deadline_ms is not None:
        h[headers.DEADLINE] = str(deadline_ms)
    return Request(Msg(_client=client, subject="svc.echo", reply=reply, data=data, headers=h))  # type: ignore[arg-type]


async def echo(req: Echo, ctx: RequestContext) -> Echo:
    await asyncio.sleep(req.delay_s)
    if req.text == "forbidden":
        raise errors.Forbidden("not you")
    if req.text == "crash":
        raise KeyError("sk-secret")
    return Echo(text=f"{req.text}/{ctx.tenant}/{ctx.request_id}")


async def typed_handler(stage: bus.Stage) -> Any:
    group = FakeGroup()
    await stage.add_typed(group, name="echo", req_type=Echo, handler=echo)  # type: ignore[arg-type]
    return group.handlers["echo"]


async def settle(stage: bus.Stage) -> None:
    """Wait (bounded) until the stage has no request in flight."""
    for _ in range(1_000):
        if not stage.in_flight:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("requests still in flight after 5 s")


def envelope(published: tuple[str, bytes, dict[str, str] | None]) -> errors.LockgateError:
    _, data, h = published
    assert h is not None
    assert headers.SERVICE_ERROR_CODE in h
    body = msgspec.json.decode(data, type=ErrorEnvelope).error
    assert body.request_id == "req-1"
    return errors.from_reply(data, h[headers.SERVICE_ERROR_CODE], h[headers.SERVICE_ERROR], "caller")


async def test_the_micro_callback_returns_at_once_and_requests_run_concurrently() -> None:
    stage = make_stage()
    client = FakeClient()
    on_request = await typed_handler(stage)
    t0 = time.monotonic()
    for i in range(20):  # as nats-py does: one callback awaited after the other
        await on_request(request(client, msgspec.json.encode(Echo(text=str(i), delay_s=0.2))))
    assert time.monotonic() - t0 < 0.1
    assert stage.in_flight == 20
    await settle(stage)
    assert time.monotonic() - t0 < 1.0  # concurrently: ~0.2 s, not 20 x 0.2 s
    assert sorted(msgspec.json.decode(p[1], type=Echo).text for p in client.published) == sorted(
        f"{i}/acme/req-1" for i in range(20)
    )


async def test_max_in_flight_is_back_pressure() -> None:
    stage = make_stage(max_in_flight=2)
    client = FakeClient()
    on_request = await typed_handler(stage)
    slow = msgspec.json.encode(Echo(text="s", delay_s=0.2))
    await on_request(request(client, slow))
    await on_request(request(client, slow))
    t0 = time.monotonic()
    await on_request(request(client, slow))  # waits for a slot
    assert time.monotonic() - t0 >= 0.15
    await settle(stage)
    assert len(client.published) == 3


async def test_decode_error_is_an_invalid_request_envelope() -> None:
    stage = make_stage()
    client = FakeClient()
    on_request = await typed_handler(stage)
    await on_request(request(client, b'{"text": 5}'))
    await on_request(request(client, b"not json"))
    await settle(stage)
    first, second = (envelope(p) for p in client.published)
    assert type(first) is errors.InvalidRequest
    assert "$.text" in first.message
    assert first.stage == "tester"
    assert type(second) is errors.InvalidRequest
    assert stage.errors_by_type == {"invalid_request": 2}


async def test_handler_errors_become_envelopes_without_leaking_internals() -> None:
    stage = make_stage()
    client = FakeClient()
    on_request = await typed_handler(stage)
    await on_request(request(client, msgspec.json.encode(Echo(text="forbidden"))))
    await settle(stage)
    await on_request(request(client, msgspec.json.encode(Echo(text="crash"))))
    await settle(stage)
    forbidden, crash = (envelope(p) for p in client.published)
    assert type(forbidden) is errors.Forbidden
    assert forbidden.stage == "tester"
    assert type(crash) is errors.Internal
    assert "sk-secret" not in crash.message
    assert "sk-secret" not in client.published[1][2][headers.SERVICE_ERROR]  # type: ignore[index]


async def test_expired_deadline_is_refused_before_the_handler_runs() -> None:
    stage = make_stage()
    client = FakeClient()
    on_request = await typed_handler(stage)
    await on_request(request(client, msgspec.json.encode(Echo(text="late")), deadline_ms=now_ms() - 1))
    await settle(stage)
    err = envelope(client.published[0])
    assert type(err) is errors.DeadlineExceeded
    assert "before the stage started" in err.message


async def test_a_handler_is_cut_off_at_the_deadline() -> None:
    stage = make_stage()
    client = FakeClient()
    on_request = await typed_handler(stage)
    t0 = time.monotonic()
    await on_request(request(client, msgspec.json.encode(Echo(text="slow", delay_s=5)), deadline_ms=now_ms() + 150))
    await settle(stage)
    assert time.monotonic() - t0 < 1.0
    assert type(envelope(client.published[0])) is errors.DeadlineExceeded


async def test_no_reply_subject_means_no_reply_and_no_crash() -> None:
    stage = make_stage()
    client = FakeClient()
    on_request = await typed_handler(stage)
    await on_request(request(client, b"garbage", reply=""))
    await settle(stage)
    assert client.published == []
    assert stage.errors_by_type == {"invalid_request": 1}


async def test_a_crashing_raw_handler_frees_its_slot() -> None:
    stage = make_stage(max_in_flight=1)
    client = FakeClient()

    async def boom(_: Request) -> None:
        raise RuntimeError("bug")

    on_request = stage.spawner(boom)
    for _ in range(3):  # with a leaked slot the second call would wait for ever
        await asyncio.wait_for(on_request(request(client, b"")), 1.0)
        await settle(stage)
    assert stage.in_flight == 0


async def test_stop_waits_for_in_flight_requests() -> None:
    stage = make_stage()
    client = FakeClient()
    on_request = await typed_handler(stage)
    await on_request(request(client, msgspec.json.encode(Echo(text="x", delay_s=0.1))))
    await stage.stop(grace_s=2.0)
    assert len(client.published) == 1
    assert msgspec.json.decode(client.published[0][1], type=Echo).text == "x/acme/req-1"


async def test_stop_cancels_what_outlives_the_grace_period() -> None:
    stage = make_stage()
    client = FakeClient()
    on_request = await typed_handler(stage)
    await on_request(request(client, msgspec.json.encode(Echo(text="x", delay_s=3))))
    t0 = time.monotonic()
    await stage.stop(grace_s=0.1)
    assert time.monotonic() - t0 < 1.0
    await asyncio.sleep(0.01)
    assert stage.in_flight == 0


async def test_call_refuses_an_expired_context_without_sending() -> None:
    ctx = RequestContext.new(timeout_ms=-5)
    with pytest.raises(errors.DeadlineExceeded):
        await bus.call(None, "svc.x", Echo(text="x"), Echo, ctx, stage="svc", timeout_s=1.0)  # type: ignore[arg-type]


async def test_log_fields_bound_in_one_request_never_reach_the_next() -> None:
    stage = make_stage()
    client = FakeClient()
    seen: list[dict[str, Any]] = []

    async def snoop(req: Echo, ctx: RequestContext) -> Echo:
        seen.append(structlog.contextvars.get_contextvars())
        structlog.contextvars.bind_contextvars(secret_user=req.text)  # a handler binds its own field
        return req

    group = FakeGroup()
    await stage.add_typed(group, name="snoop", req_type=Echo, handler=snoop)  # type: ignore[arg-type]
    structlog.contextvars.bind_contextvars(left_in_the_loop="x")  # bound in the subscription's task
    try:
        for text in ("first", "second"):
            await group.handlers["snoop"](request(client, msgspec.json.encode(Echo(text=text))))
            await settle(stage)
    finally:
        structlog.contextvars.clear_contextvars()
    assert seen == [{"request_id": "req-1", "tenant": "acme", "stage": "tester"}] * 2
