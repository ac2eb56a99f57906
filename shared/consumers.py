"""A durable, shared JetStream consumer of typed events: decode, handle, ack.

Push delivery to a queue group: the server hands each event to one replica of
the service (no pull request per batch), the replica acks it once handled,
naks it (redelivery after a second) when handling failed, and terminates it
when it cannot be decoded (a poison message must not loop for ever).
"""

from __future__ import annotations

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
) -> Callable[[], Awaitable[None]]:
    """Start consuming; returns the function that stops it (the durable consumer stays)."""
    decoder = msgspec.json.Decoder(event_type)

    async def on_msg(msg: Msg) -> None:
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
    return sub.unsubscribe
