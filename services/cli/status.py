"""`lockgate status`: the services answering `$SRV.PING`, with request and error counts."""

from __future__ import annotations

import msgspec
from rich.console import Console
from rich.table import Table

from services.cli.discovery import ping_all
from shared.runtime import connect_once


class _EndpointStats(msgspec.Struct):
    name: str
    subject: str
    num_requests: int = 0
    num_errors: int = 0


class _Stats(msgspec.Struct):
    name: str
    id: str
    endpoints: list[_EndpointStats] | None = None


async def run(url: str) -> int:
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
        if not pings:
            print("no Lockgate service answered $SRV.PING")
            return 1
    finally:
        await nc.drain()
    return 0
