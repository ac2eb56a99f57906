"""Who is up: `$SRV.PING` replies gathered for a short window."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg


class Ping(msgspec.Struct, kw_only=True):
    name: str
    id: str
    version: str
    metadata: dict[str, str] | None = None


async def ping_all(nc: Client, window_s: float = 0.3) -> list[Ping]:
    replies: list[Ping] = []
    inbox = nc.new_inbox()

    async def on_reply(msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            replies.append(msgspec.json.decode(msg.data, type=Ping))

    sub = await nc.subscribe(inbox, cb=on_reply)
    await nc.publish("$SRV.PING", b"", reply=inbox)
    await asyncio.sleep(window_s)
    await sub.unsubscribe()
    return replies


async def wait_for(nc: Client, names: set[str], timeout_s: float) -> None:
    """Return once every named service answers a PING; raise TimeoutError otherwise."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        seen = {p.name for p in await ping_all(nc, 0.2)}
        missing = names - seen
        if not missing:
            return
        if loop.time() > end:
            raise TimeoutError(f"services not answering: {', '.join(sorted(missing))}")
