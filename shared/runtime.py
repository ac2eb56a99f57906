"""What every service gets (connection, JetStream, config, names) and how it stops.

A service module exposes ``async def start(env: Env) -> Running``. ``Running``
stops the micro endpoints first (no new requests), lets in-flight requests
finish, then stops background consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared import __version__
from shared.bus import Stage
from shared.config import LockgateConfig
from shared.subjects import Names


@dataclass(frozen=True)
class Env:
    nc: Client
    js: JetStreamContext
    config: LockgateConfig
    names: Names
    version: str = __version__

    def stage(self, name: str, description: str) -> Stage:
        return Stage(
            self.nc,
            name=name,
            version=self.version,
            max_in_flight=self.config.gateway.max_in_flight,
            default_timeout_ms=self.config.gateway.request_timeout_ms,
            description=description,
        )


@dataclass
class Running:
    """A started service: its micro stage, background tasks and clean-ups."""

    name: str
    stage: Stage | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    url: str = ""  # where a service that also listens on HTTP can be reached

    async def stop(self) -> None:
        if self.stage is not None:
            await self.stage.stop()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            # One cancel is not always enough: on Python 3.11 asyncio.wait_for (inside nats-py's
            # fetch) swallows a cancellation that races an arriving message, and the loop runs on.
            while not t.done():
                await asyncio.wait({t}, timeout=0.2)
                if not t.done():
                    t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                t.result()
        for fn in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                await fn()


async def connect(url: str, name: str) -> Client:
    """A connection that reconnects for ever (a service outlives a NATS restart)."""
    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        pending_size=64 * 1024 * 1024,
    )


class NatsUnreachable(Exception):
    """The CLI could not reach NATS; the message says where it tried."""


async def connect_once(url: str, name: str, timeout_s: float = 3.0) -> Client:
    """A connection for a command-line tool: fail fast and clearly, no reconnect noise."""

    async def quiet(_: Exception) -> None:
        return None

    try:
        return await nats.connect(
            url, name=name, connect_timeout=timeout_s, max_reconnect_attempts=1, reconnect_time_wait=0.1,
            allow_reconnect=False,
            error_cb=quiet,
        )  # fmt: skip
    except Exception as exc:
        where = url.rsplit("@", 1)[-1]
        raise NatsUnreachable(
            f"cannot reach NATS at {where} ({type(exc).__name__}); is `lockgate up` running?"
        ) from None


def install_uvloop() -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional at import time (not on Windows)
    except ImportError:
        return
    uvloop.install()
