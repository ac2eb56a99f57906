"""The cross-cutting work of every endpoint, written once, and the typed caller.

``Stage`` wraps a ``nats.micro`` service. Its endpoints run each request in its
own task under a semaphore (nats-py awaits a subscription's handler one message
at a time; a slow provider call must never hold up the next request), clear and
bind the log context from the headers, refuse an expired deadline and apply
``asyncio.timeout`` for the rest, decode with the typed decoder, call the
handler, encode, and map every exception to the error envelope. Nothing a
client sends gets a silent drop.

``call`` is the other side: it sends a typed request with the context headers
and returns the typed reply, or raises the exception class the stage raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Group, Service

from shared import errors, headers
from shared.headers import RequestContext

Req = TypeVar("Req")
Resp = TypeVar("Resp")

log = structlog.get_logger("lockgate.bus")
CANCELLED_BY_CLIENT = "lockgate: cancelled by the client"  # the message of the task cancellation
_encoder = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decoder(tp: type[Any]) -> msgspec.json.Decoder[Any]:
    """One decoder per type, built once."""
    dec = _decoders.get(tp)
    if dec is None:
        dec = _decoders[tp] = msgspec.json.Decoder(tp)
    return dec


def error_headers(exc: errors.LockgateError, extra: dict[str, str] | None = None) -> dict[str, str]:
    h = {
        headers.SERVICE_ERROR: exc.header_line(),
        headers.SERVICE_ERROR_CODE: str(exc.status),
        headers.EVENT: headers.EVENT_ERROR,
    }
    if extra:
        h.update(extra)
    return h


def as_lockgate_error(exc: BaseException, stage: str) -> errors.LockgateError:
    """Map any exception to the envelope's vocabulary (never ``repr(exc)`` to a client)."""
    if isinstance(exc, errors.LockgateError):
        if not exc.stage:
            exc.stage = stage
        return exc
    if isinstance(exc, msgspec.ValidationError | msgspec.DecodeError):
        return errors.InvalidRequest(errors.validation_message(exc), stage=stage)
    if isinstance(exc, TimeoutError):
        return errors.DeadlineExceeded("the request's deadline passed", stage=stage)
    return errors.Internal("internal error; see the service log for the request id", stage=stage)


class Stage:
    """One micro service: endpoints with bounded concurrency and uniform errors."""

    def __init__(
        self,
        nc: Client,
        *,
        name: str,
        version: str,
        max_in_flight: int,
        default_timeout_ms: int,
        description: str = "",
    ) -> None:
        self.nc = nc
        self.name = name
        self.version = version
        self.description = description
        self.default_timeout_ms = default_timeout_ms
        self._sem = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_request: dict[str, set[asyncio.Task[None]]] = {}  # cancellable tasks by request id
        self._cancel_sub: Subscription | None = None
        self._service: Service | None = None
        self.errors_by_type: dict[str, int] = {}
        self._errors: dict[str, tuple[int, str]] = {}  # subject -> (count, last error line)

    async def start(self) -> Service:
        self._service = await add_service(
            self.nc,
            name=self.name,
            version=self.version,
            description=self.description or f"lockgate {self.name}",
            queue_group=self.name,
            stats_handler=self._stats,
        )
        return self._service

    def record_error(self, subject: str, err: errors.LockgateError) -> None:
        """Count an error answer (micro only counts exceptions its handler raises; ours answer themselves)."""
        self.errors_by_type[err.type] = self.errors_by_type.get(err.type, 0) + 1
        count, _ = self._errors.get(subject, (0, ""))
        self._errors[subject] = (count + 1, err.header_line())

    def _stats(self, endpoint: EndpointStats) -> dict[str, int]:
        # `$SRV.STATS` builds a fresh EndpointStats per request: report our error counts in it.
        endpoint.num_errors, endpoint.last_error = self._errors.get(endpoint.subject, (0, ""))
        return dict(self.errors_by_type)

    @property
    def service(self) -> Service:
        if self._service is None:
            raise RuntimeError("stage not started")
        return self._service

    def group(self, subject_prefix: str) -> Group:
        return self.service.add_group(name=subject_prefix, queue_group=self.name)

    async def add_typed(
        self,
        target: Group | Service,
        *,
        name: str,
        req_type: type[Req],
        handler: Callable[[Req, RequestContext], Awaitable[Any]],
        subject: str | None = None,
    ) -> None:
        """A request/reply endpoint: typed request in, typed reply (or envelope) out."""
        dec = decoder(req_type)

        async def run(request: Request) -> None:
            ctx = self._enter(request.headers)
            try:
                if ctx.expired():
                    raise errors.DeadlineExceeded("deadline passed before the stage started", stage=self.name)
                async with asyncio.timeout(ctx.remaining_s()):
                    reply = await handler(dec.decode(request.data), ctx)
                await request.respond(encode(reply))
            except asyncio.CancelledError as exc:
                if exc.args != (CANCELLED_BY_CLIENT,):
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                await self.respond_error(
                    request, errors.Cancelled("cancelled: the client went away", stage=self.name), ctx
                )
            except Exception as exc:
                await self.respond_error(request, exc, ctx)

        await target.add_endpoint(name=name, subject=subject, handler=self.spawner(run, cancellable=True))

    async def add_raw(
        self,
        target: Group | Service,
        *,
        name: str,
        handler: Callable[[Request], Awaitable[None]],
        subject: str | None = None,
    ) -> None:
        """An endpoint whose handler replies itself (streaming, custom auth)."""
        await target.add_endpoint(name=name, subject=subject, handler=self.spawner(handler))

    def spawner(
        self, run: Callable[[Request], Awaitable[None]], *, cancellable: bool = False
    ) -> Callable[[Request], Awaitable[None]]:
        """Turn a handler into a micro handler that returns at once and runs it in a task."""

        async def on_request(request: Request) -> None:
            await self._sem.acquire()  # back-pressure: the subscription waits when full
            # A fresh, empty context per request: nothing bound for one request (log fields, the
            # request context) can reach another, with no clearing to pay for on the hot path.
            task = asyncio.create_task(self._guarded(run, request), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._done)
            rid = (request.headers or {}).get(headers.REQUEST_ID) if cancellable else None
            if rid:
                self._by_request.setdefault(rid, set()).add(task)
                task.add_done_callback(lambda t: self._forget(rid, t))

        return on_request

    def _forget(self, rid: str, task: asyncio.Task[None]) -> None:
        tasks = self._by_request.get(rid)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._by_request[rid]

    async def cancel_on(self, subject: str) -> None:
        """Honour cancel messages (body: a request id) on ``subject``: the typed endpoints' tasks
        for that request are cancelled and answer ``cancelled``. Every replica listens (no queue
        group): only the one serving the request has something to cancel."""

        async def on_cancel(msg: Msg) -> None:
            rid = msg.data.decode("utf-8", "replace")[:128]
            for task in list(self._by_request.get(rid, ())):
                task.cancel(CANCELLED_BY_CLIENT)

        self._cancel_sub = await self.nc.subscribe(subject, cb=on_cancel)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._sem.release()

    async def _guarded(self, run: Callable[[Request], Awaitable[None]], request: Request) -> None:
        try:
            await run(request)
        except Exception:  # the last line of defence: log, never kill the loop
            log.exception("handler_crashed", stage=self.name)

    def _enter(self, hdrs: dict[str, str] | None) -> RequestContext:
        ctx = RequestContext.from_headers(hdrs, default_timeout_ms=self.default_timeout_ms)
        # The task runs in an empty context (spawner), so binding is enough: nothing to clear.
        structlog.contextvars.bind_contextvars(request_id=ctx.request_id, tenant=ctx.tenant, stage=self.name)
        headers.current.set(ctx)
        return ctx

    async def respond_error(
        self, request: Request, exc: BaseException, ctx: RequestContext, extra: dict[str, str] | None = None
    ) -> None:
        err = as_lockgate_error(exc, self.name)
        self.record_error(request.subject, err)
        if isinstance(err, errors.Internal):
            log.error("request_failed", error=repr(exc), exc_info=exc)
        if request._msg.reply:
            await request.respond(encode(err.envelope(ctx.request_id)), headers=error_headers(err, extra))

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking requests, then let in-flight ones finish (up to ``grace_s``)."""
        if self._cancel_sub is not None:
            with contextlib.suppress(Exception):
                await self._cancel_sub.unsubscribe()
        if self._service is not None:
            await self._service.stop()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for t in pending:
                t.cancel()


async def call(
    nc: Client,
    subject: str,
    payload: Any,
    reply_type: type[Resp],
    ctx: RequestContext,
    *,
    stage: str,
    timeout_s: float,
    late_s: float = 0.0,
) -> Resp:
    """Typed request/reply to a stage within the deadline.

    Raises ``NoResponders`` (a ``StageUnavailable``) when nobody listens,
    ``StageUnavailable`` for a stage that does not answer within ``timeout_s``, ``DeadlineExceeded`` when the overall deadline
    is what ran out, or the typed error the stage replied with. ``late_s``: when
    the deadline bounds the wait, keep listening this much longer for a reply
    already on its way (a caller that needs its facts, e.g. the cost to settle).
    """
    remaining = ctx.remaining_s()
    if remaining <= 0:
        raise errors.DeadlineExceeded(f"deadline passed before calling {stage}", stage=stage)
    wait = min(timeout_s, remaining)
    extra = late_s if wait >= remaining else 0.0
    try:
        msg = await nc.request(subject, encode(payload), timeout=wait + extra, headers=ctx.to_headers())
    except nats.errors.NoRespondersError:
        raise errors.NoResponders(f"no {stage} is running", stage=stage) from None
    except (nats.errors.TimeoutError, TimeoutError):
        if wait >= remaining:
            raise errors.DeadlineExceeded(f"deadline passed while waiting for {stage}", stage=stage) from None
        raise errors.StageUnavailable(f"{stage} did not answer within {int(wait * 1000)} ms", stage=stage) from None
    h = msg.headers
    if h and headers.SERVICE_ERROR_CODE in h:
        raise errors.from_reply(msg.data, h.get(headers.SERVICE_ERROR_CODE), h.get(headers.SERVICE_ERROR), stage)
    try:
        result: Resp = decoder(reply_type).decode(msg.data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise errors.Internal(f"{stage} sent a reply that does not match its contract: {exc}", stage=stage) from None
    return result
