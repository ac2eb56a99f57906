"""The simulator's aiohttp application and the embeddable :class:`SimulatorServer`."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any, Protocol

import msgspec
from aiohttp import web
from multidict import CIMultiDictProxy

from services.simulator import moderations
from services.simulator.anthropic_wire import AnthropicWire
from services.simulator.anthropic_wire import authorized as any_key
from services.simulator.faults import HEADER, FaultResolver, FaultSpecError, pick_status, retry_headers
from services.simulator.openai_wire import OpenAIWire
from services.simulator.openai_wire import error_body as openai_error
from shared.schemas.simulator import FaultConfig, SimulatorConfig

_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_REASONS = {529: "Overloaded"}


class _Parsed(Protocol):
    @property
    def directive_text(self) -> str | None: ...
    @property
    def stream(self) -> bool: ...


class _Wire(Protocol):
    endpoint: str

    def parse(self, body: bytes) -> Any: ...
    def error_body(self, status: int, message: str) -> bytes: ...
    def authorized(self, headers: CIMultiDictProxy[str]) -> bool: ...
    def respond(self, req: Any, output: str) -> bytes: ...
    def stream_events(self, req: Any, output: str) -> list[bytes]: ...
    def broken_stream(self, req: Any) -> bytes: ...


class _Stats:
    """Request counters; :meth:`snapshot` is what ``GET /_sim/stats`` returns."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_endpoint: dict[str, int] = {}
        self.by_profile: dict[str, int] = {}
        self.successes = 0
        self.client_errors = 0
        self.faulted = 0
        self.faults: dict[str, int] = {}

    def request(self, endpoint: str, profile: str) -> None:
        self.requests += 1
        self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1
        self.by_profile[profile] = self.by_profile.get(profile, 0) + 1

    def fault(self, kind: str, first: bool) -> None:
        """Count an injected fault; ``first`` marks the first fault of a request."""
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.faulted += first

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_endpoint": dict(self.by_endpoint),
            "by_profile": dict(self.by_profile),
            "successes": self.successes,
            "client_errors": self.client_errors,
            "faulted": self.faulted,
            "faults": dict(self.faults),
        }


class SimulatorServer:
    """A simulated OpenAI + Anthropic provider on the caller's event loop.

    >>> sim = SimulatorServer(SimulatorConfig())
    >>> url = await sim.start()       # "http://127.0.0.1:PORT"
    >>> ...                           # OpenAI SDK: base_url=url + "/v1"; Anthropic SDK: base_url=url
    >>> await sim.stop()
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        cfg = self.config
        self._openai = OpenAIWire(cfg.seed, cfg.words_per_reply)
        self._anthropic = AnthropicWire(cfg.seed, cfg.words_per_reply)
        self._moderations = moderations.ModerationsWire()
        self._resolver = FaultResolver()
        self._rng = random.Random(cfg.seed)
        self._stats = _Stats()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._hanging: set[asyncio.BaseTransport] = set()
        models = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "lockgate-simulator"} for m in cfg.models
        ]
        self._models_body = msgspec.json.encode({"object": "list", "data": models})

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL (``http://HOST:PORT``, no trailing slash); only valid after :meth:`start`."""
        if self._url is None:
            raise RuntimeError("simulator is not running; call start() first")
        return self._url

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the request counters (same JSON as ``GET /_sim/stats``); ``hanging`` is
        the number of requests currently held open by the ``hang`` fault."""
        return {**self._stats.snapshot(), "hanging": len(self._hanging)}

    def reset_stats(self) -> None:
        """Zero the counters and re-seed the ``error_rate`` random generator."""
        self._stats.reset()
        self._rng.seed(self.config.seed)

    async def start(self) -> str:
        """Bind ``config.host:config.port`` (0 = a free port), start serving and return the base URL."""
        if self._runner is not None:
            return self.url
        sock = _bind(self.config.host, self.config.port)
        runner = web.AppRunner(self.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
        try:
            await runner.setup()
            await web.SockSite(runner, sock, backlog=1024).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        host, port = sock.getsockname()[:2]
        self._runner = runner
        self._url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        return self._url

    async def stop(self) -> None:
        """Stop serving; hanging requests are disconnected, in-flight ones get up to 2 s to finish."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for transport in list(self._hanging):
            transport.close()
        await runner.cleanup()
        self._url = None

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def build_app(self) -> web.Application:
        """The aiohttp application (exposed for embedding into an existing aiohttp server)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        for prefix in ("", "/p/{profile}"):
            r.add_post(prefix + "/v1/chat/completions", self._chat)
            r.add_post(prefix + "/v1/messages", self._messages)
            r.add_get(prefix + "/v1/models", self._models)
            r.add_post(prefix + "/v1/moderations", self._moderate)
        r.add_get("/healthz", self._healthz)
        r.add_get("/_sim/stats", self._get_stats)
        r.add_post("/_sim/reset", self._reset)
        r.add_route("*", "/{tail:.*}", self._not_found)
        return app

    # ------------------------------------------------------------------ handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=_JSON)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(self.stats), content_type=_JSON)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.Response(body=b'{"status":"reset"}', content_type=_JSON)

    async def _not_found(self, request: web.Request) -> web.Response:
        message = f"Unknown simulator route: {request.method} {request.path}"
        return web.Response(status=404, body=openai_error(404, message), content_type=_JSON)

    async def _models(self, request: web.Request) -> web.Response:
        profile = request.match_info.get("profile")
        self._stats.request("models", profile or "default")
        if profile is not None and profile not in self.config.profiles:
            self._stats.client_errors += 1
            return _error(404, openai_error(404, f"Unknown simulator profile {profile!r}"))
        if not any_key(request.headers):
            self._stats.client_errors += 1
            return _error(401, openai_error(401, "Missing API key: send 'Authorization: Bearer <key>'."))
        self._stats.successes += 1
        return web.Response(body=self._models_body, content_type=_JSON)

    async def _moderate(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/moderations``: the word-list classifier; faults from the profile and the header
        (latency, hang, status, malformed; ``output`` and ``chunk_delay`` do not apply)."""
        stats = self._stats
        profile = request.match_info.get("profile")
        stats.request(self._moderations.endpoint, profile or "default")
        base: FaultConfig | None = self.config.default if profile is None else self.config.profiles.get(profile)
        if base is None:
            stats.client_errors += 1
            return _error(404, openai_error(404, f"Unknown simulator profile {profile!r}"))
        if not self._openai.authorized(request.headers):
            stats.client_errors += 1
            return _error(401, openai_error(401, "Missing API key: send 'Authorization: Bearer <key>'."))
        try:
            model, inputs = moderations.parse(await request.read())
            fault = self._resolver.resolve(base, request.headers.get(HEADER), None)
        except FaultSpecError as exc:
            stats.client_errors += 1
            return _error(400, openai_error(400, f"Invalid simulator fault spec: {exc}"))
        except ValueError as exc:
            stats.client_errors += 1
            return _error(400, openai_error(400, f"Invalid request: {exc}"))
        hit = False

        def note(kind: str) -> None:
            nonlocal hit
            stats.fault(kind, not hit)
            hit = True

        if fault.latency_ms:
            note("latency")
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.hang:
            note("hang")
            await self._hang(request)
        status = pick_status(fault, self._rng)
        if status:
            note("status")
            return _error(status, openai_error(status, f"Simulated fault: HTTP {status}"), retry_headers(fault))
        body = self._moderations.respond(model, inputs)
        if fault.malformed:
            note("malformed")
            return web.Response(body=body[: len(body) // 2], content_type=_JSON)
        stats.successes += 1
        return web.Response(body=body, content_type=_JSON)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, self._openai)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, self._anthropic)

    async def _complete(self, request: web.Request, wire: _Wire) -> web.StreamResponse:
        stats = self._stats
        profile = request.match_info.get("profile")
        stats.request(wire.endpoint, profile or "default")
        base: FaultConfig | None = self.config.default if profile is None else self.config.profiles.get(profile)
        if base is None:
            stats.client_errors += 1
            return _error(404, wire.error_body(404, f"Unknown simulator profile {profile!r}"))
        if not wire.authorized(request.headers):
            stats.client_errors += 1
            hint = "'Authorization: Bearer <key>'" if wire is self._openai else "'x-api-key: <key>'"
            return _error(401, wire.error_body(401, f"Missing API key: send {hint}."))
        try:
            req: _Parsed = wire.parse(await request.read())
            fault = self._resolver.resolve(base, request.headers.get(HEADER), req.directive_text)
        except FaultSpecError as exc:
            stats.client_errors += 1
            return _error(400, wire.error_body(400, f"Invalid simulator fault spec: {exc}"))
        except ValueError as exc:
            stats.client_errors += 1
            return _error(400, wire.error_body(400, f"Invalid request: {exc}"))
        if fault != _CLEAN:
            return await self._faulty(request, wire, req, fault)
        stats.successes += 1
        if req.stream:
            return web.Response(body=b"".join(wire.stream_events(req, "auto")), headers=_SSE_HEADERS)
        return web.Response(body=wire.respond(req, "auto"), content_type=_JSON)

    async def _faulty(self, request: web.Request, wire: _Wire, req: _Parsed, fault: FaultConfig) -> web.StreamResponse:
        stats = self._stats
        hit = False

        def note(kind: str) -> None:
            nonlocal hit
            stats.fault(kind, not hit)
            hit = True

        if fault.latency_ms:
            note("latency")
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.hang:
            note("hang")
            await self._hang(request)
        status = pick_status(fault, self._rng)
        if status:
            note("status")
            message = f"Simulated fault: HTTP {status}"
            return _error(status, wire.error_body(status, message), retry_headers(fault))
        if fault.malformed:
            note("malformed")
            if req.stream:
                return web.Response(body=wire.broken_stream(req), headers=_SSE_HEADERS)
            body = wire.respond(req, fault.output)
            return web.Response(body=body[: len(body) // 2], content_type=_JSON)
        if fault.output != "auto":
            note("output")
        if not req.stream:
            stats.successes += 1
            return web.Response(body=wire.respond(req, fault.output), content_type=_JSON)
        events = wire.stream_events(req, fault.output)
        if not fault.chunk_delay_ms:
            stats.successes += 1
            return web.Response(body=b"".join(events), headers=_SSE_HEADERS)
        note("chunk_delay")
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        delay = fault.chunk_delay_ms / 1000
        try:
            for i, event in enumerate(events):
                if i:
                    await asyncio.sleep(delay)
                await resp.write(event)
            await resp.write_eof()
        except ConnectionError:
            return resp
        stats.successes += 1
        return resp

    async def _hang(self, request: web.Request) -> None:
        """Wait until the client disconnects (the handler is then cancelled) or the server stops."""
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        self._hanging.add(transport)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self._hanging.discard(transport)


_CLEAN = FaultConfig()


def _error(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, reason=_REASONS.get(status), body=body, content_type=_JSON, headers=headers)


def _bind(host: str, port: int) -> socket.socket:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = info[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
