"""`lockgate audit tail`: follow the durable AUDIT stream (JSON lines)."""

from __future__ import annotations

import asyncio
import signal
import sys

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from shared.runtime import connect_once
from shared.subjects import Names


async def tail(url: str, *, tenant: str | None, namespace: str, from_start: bool, follow: bool) -> int:
    nc = await connect_once(url, "lockgate-audit-tail")
    js = nc.jetstream()
    names = Names(namespace)
    done = asyncio.Event()
    idle = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        sys.stdout.write(msg.data.decode() + "\n")
        sys.stdout.flush()
        idle.clear()

    sub = await js.subscribe(
        names.audit_of(tenant),
        stream=names.audit_stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW,
        cb=on_msg,
    )
    try:
        if follow:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, done.set)
            await done.wait()
        else:
            # Without --follow: print what is there, stop after half a second with nothing new.
            while True:
                idle.set()
                await asyncio.sleep(0.5)
                if idle.is_set():
                    break
    finally:
        await sub.unsubscribe()
        await nc.drain()
    return 0
