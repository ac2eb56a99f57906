"""`lockgate status`: the services answering `$SRV.PING`, with request and error counts, and breakers."""

from __future__ import annotations

import msgspec
from nats.aio.client import Client
from rich.console import Console
from rich.table import Table

from services.cli.discovery import ping_all
from shared import breakers
from shared.headers import now_ms
from shared.runtime import connect_once
from shared.subjects import OP_CAPACITY, ROUTER, Names


class _EndpointStats(msgspec.Struct):
    name: str
    subject: str
    num_requests: int = 0
    num_errors: int = 0


class _Stats(msgspec.Struct):
    name: str
    id: str
    endpoints: list[_EndpointStats] | None = None


async def _breakers_table(nc: Client, names: Names) -> Table | None:
    """The circuit-breaker state of every deployment that ever changed state (None: no bucket)."""
    try:
        kv = await nc.jetstream(timeout=2.0).key_value(names.breakers_bucket)
    except Exception:  # no bucket yet (no executor ran), or no JetStream access
        return None
    table = Table(title="Circuit breakers (deployments not listed are closed)")
    for col in ("deployment", "state", "since", "probe in", "reason"):
        table.add_column(col)
    now = now_ms()
    for st in await breakers.read_all(kv):
        probe = f"{max(0, st.until_ms - now) / 1000:.1f} s" if st.state == "open" else "-"
        table.add_row(st.deployment, st.state, f"{(now - st.since_ms) / 1000:.0f} s ago", probe, st.reason)
    return table


class _Usage(msgspec.Struct):
    deployment: str
    requests: int
    tokens: int
    rpm: int | None = None
    tpm: int | None = None


async def _capacity_table(nc: Client, names: Names) -> Table | None:
    """Requests and tokens per deployment in the last minute, as a router counts them (None: no router)."""
    try:
        msg = await nc.request(names.mesh(ROUTER, OP_CAPACITY), b"", timeout=1.0)
        rows = msgspec.json.decode(msg.data, type=list[_Usage])
    except Exception:
        return None
    if not rows:
        return None
    table = Table(title="Deployment capacity (last minute; at 90 % of a quota the router prefers others)")
    for col in ("deployment", "requests", "rpm", "tokens", "tpm"):
        table.add_column(col)
    for u in rows:
        table.add_row(u.deployment, str(u.requests), str(u.rpm or "-"), str(u.tokens), str(u.tpm or "-"))
    return table


async def run(url: str, namespace: str = "") -> int:
    nc = await connect_once(url, "lockgate-status")
    try:
        pings = await ping_all(nc, 0.5)
        table = Table(title=f"Lockgate services on {url.rsplit('@', maxsplit=1)[-1]}")
        for col in ("service", "version", "id", "endpoints", "requests", "errors"):
            table.add_column(col)
        for p in sorted(pings, key=lambda p: (p.name, p.id)):
            requests = errors = 0
            subjects: list[str] = []
            try:
                msg = await nc.request(f"$SRV.STATS.{p.name}.{p.id}", b"", timeout=1.0)
                stats = msgspec.json.decode(msg.data, type=_Stats)
                for e in stats.endpoints or []:
                    requests += e.num_requests
                    errors += e.num_errors
                    subjects.append(e.subject)
            except Exception:
                subjects = ["?"]
            table.add_row(p.name, p.version, p.id, ", ".join(subjects), str(requests), str(errors))
        Console().print(table)
        breaker_table = await _breakers_table(nc, Names(namespace))
        if breaker_table is not None:
            Console().print(breaker_table)
        capacity_table = await _capacity_table(nc, Names(namespace))
        if capacity_table is not None:
            Console().print(capacity_table)
        if not pings:
            print("no Lockgate service answered $SRV.PING")
            return 1
    finally:
        await nc.drain()
    return 0
