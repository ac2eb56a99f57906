"""A durable, shared JetStream consumer of typed events: decode, handle, ack.

Push delivery to a queue group: the server hands each event to one replica of
the service (no pull request per batch), the replica acks it once handled,
naks it (redelivery after a second) when handling failed, and terminates it
when it cannot be decoded (a poison message must not loop for ever).

nats-py awaits a subscription's callback one message at a time, so a handler
that waits on I/O (a KV compare-and-set) caps the consumer at one event per
round trip. With ``concurrency`` > 1 each event is handled in its own task,
at most that many at once (the callback waits for room: back-pressure, and
``max_ack_pending`` bounds what the server hands out). Only for handlers whose
events commute: order between concurrent events is not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

E = TypeVar("E")
log = structlog.get_logger("lockgate.consumers")


async def consume(
    js: JetStreamContext,
    *,
    stream: str,
    subject: str,
    durable: str,
    event_type: type[E],
    handle: Callable[[E, int], Awaitable[None]],  # (event, its stream sequence)
    from_start: bool,
    ack_wait_s: float = 30.0,
    max_ack_pending: int = 4_096,
    concurrency: int = 1,
) -> Callable[[], Awaitable[None]]:
    """Start consuming; returns the function that stops it (the durable consumer stays)."""
    decoder = msgspec.json.Decoder(event_type)
    room = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    async def handle_one(msg: Msg) -> None:
        try:
            event = decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("undecodable_event", consumer=durable, subject=msg.subject, error=str(exc))
            with contextlib.suppress(Exception):
                await msg.term()
            return
        try:
            await handle(event, msg.metadata.sequence.stream)
        except Exception as exc:
            log.warning("event_handling_failed", consumer=durable, subject=msg.subject, error=str(exc))
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
            return
        with contextlib.suppress(Exception):  # an ack lost to a reconnect means one redelivery
            await msg.ack()

    def done(task: asyncio.Task[None]) -> None:
        running.discard(task)
        room.release()

    async def on_msg(msg: Msg) -> None:
        if concurrency == 1:
            await handle_one(msg)
            return
        await room.acquire()
        task = asyncio.create_task(handle_one(msg))
        running.add(task)
        task.add_done_callback(done)

    async def stop() -> None:
        await sub.unsubscribe()
        if running:  # let the events in hand finish (an unacked one would only be redelivered)
            await asyncio.wait(set(running), timeout=5.0)

    sub = await js.subscribe(
        subject,
        queue=durable,
        durable=durable,
        stream=stream,
        cb=on_msg,
        manual_ack=True,
        config=ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW,
            ack_wait=ack_wait_s,
            max_ack_pending=max_ack_pending,
        ),
    )
    return stop
