"""``$SRV`` discovery: every stage is a ``nats.micro`` service any NATS tool can find.

The session's nats-server is shared, so replies from other meshes may arrive too:
each test keeps only the instances of its own mesh (by service id).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nats.aio.msg import Msg

from tests.conftest import ALL, Mesh
from tests.integration.test_mesh_basic import ask


async def gather_replies(mesh: Mesh, subject: str, wait_s: float = 0.3) -> list[dict[str, Any]]:
    """Publish once and collect every reply that arrives within ``wait_s``."""
    nc = mesh.client.nc
    inbox = nc.new_inbox()
    got: list[dict[str, Any]] = []

    async def on_msg(msg: Msg) -> None:
        got.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=on_msg)
    await nc.publish(subject, b"", reply=inbox)
    await nc.flush()
    await asyncio.sleep(wait_s)
    await sub.unsubscribe()
    return got


def ours(mesh: Mesh, replies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ids = {r.stage.service.id: r.name for r in mesh.running if r.stage is not None}
    mine = {rep["name"]: rep for rep in replies if rep.get("id") in ids}
    assert all(ids[rep["id"]] == name for name, rep in mine.items())
    return mine


async def test_ping_finds_all_seven_services(mesh: Mesh) -> None:
    mine = ours(mesh, await gather_replies(mesh, "$SRV.PING"))
    assert set(mine) == set(ALL) == {"guard", "router", "budgeter", "cache", "executor", "validator", "auditor"}
    for rep in mine.values():
        assert rep["type"] == "io.nats.micro.v1.ping_response"
        assert rep["version"]


async def test_ping_by_name_finds_only_that_service(mesh: Mesh) -> None:
    replies = await gather_replies(mesh, "$SRV.PING.executor")
    assert {r["name"] for r in replies} == {"executor"}
    assert set(ours(mesh, replies)) == {"executor"}


async def test_info_lists_endpoints_in_the_mesh_namespace(mesh: Mesh) -> None:
    ns = mesh.names.namespace
    guard = ours(mesh, await gather_replies(mesh, "$SRV.INFO.guard"))["guard"]
    assert guard["type"] == "io.nats.micro.v1.info_response"
    assert [e["subject"] for e in guard["endpoints"]] == [
        mesh.names.chat,
        mesh.names.jobs_submit,
        mesh.names.jobs_status,
    ]
    assert guard["endpoints"][0]["queue_group"] == "guard"
    everything = ours(mesh, await gather_replies(mesh, "$SRV.INFO"))
    subjects = {name: {e["subject"] for e in info["endpoints"]} for name, info in everything.items()}
    assert subjects["router"] == {
        f"{ns}.mesh.v1.router.route", f"{ns}.llm.v1.models", f"{ns}.mesh.v1.router.capacity"
    }  # fmt: skip
    me = everything["budgeter"]["id"]
    assert subjects["budgeter"] == {
        f"{ns}.mesh.v1.budgeter.reserve",
        f"{ns}.mesh.v1.budgeter.own.{me}.reserve",  # the tenants this replica owns (shared/owners.py)
        f"{ns}.mesh.v1.budgeter.own.{me}.settle",
    }
    assert subjects["cache"] == {f"{ns}.mesh.v1.cache.lookup", f"{ns}.mesh.v1.cache.similar"}
    assert subjects["executor"] == {f"{ns}.mesh.v1.executor.execute"}
    assert subjects["validator"] == {f"{ns}.mesh.v1.validator.validate"}
    assert subjects["auditor"] == set()


async def test_stats_count_requests(mesh: Mesh) -> None:
    for i in range(3):
        await mesh.client.chat(ask(f"Count me {i}", model="gpt-4o-mini"))
    await mesh.client.chat(ask("JSON", model="gpt-4o-mini", response_format={"type": "json_object"}))
    executor = ours(mesh, await gather_replies(mesh, "$SRV.STATS.executor"))["executor"]
    assert executor["type"] == "io.nats.micro.v1.stats_response"
    [execute] = executor["endpoints"]
    assert execute["subject"] == mesh.names.mesh("executor", "execute")
    assert execute["num_requests"] == 4
    stats = ours(mesh, await gather_replies(mesh, "$SRV.STATS"))
    assert stats["guard"]["endpoints"][0]["num_requests"] == 4
    assert stats["validator"]["endpoints"][0]["num_requests"] == 1
    by_name = {e["name"]: e["num_requests"] for e in stats["budgeter"]["endpoints"]}
    assert by_name == {"reserve": 0, "reserve-owned": 4, "settle-owned": 0}  # the guard asks the tenant's owner


async def test_stats_count_error_answers_per_endpoint(mesh: Mesh) -> None:
    """Stages answer errors themselves (the envelope); $SRV.STATS must still count them."""
    import shared.errors as lg_errors  # noqa: PLC0415
    from shared.client import LockgateClient  # noqa: PLC0415

    bad = LockgateClient(mesh.client.nc, "lg-not-a-key", names=mesh.names)
    for _ in range(2):
        try:
            await bad.chat(ask("hello"))
        except lg_errors.Unauthorized:
            pass
        else:
            raise AssertionError("a bad key was admitted")
    guard = ours(mesh, await gather_replies(mesh, "$SRV.STATS.guard"))["guard"]
    chat = next(e for e in guard["endpoints"] if e["subject"] == mesh.names.chat)
    assert chat["num_requests"] == 2
    assert chat["num_errors"] == 2
    assert chat["last_error"].startswith("unauthorized")
    assert chat["data"] == {"unauthorized": 2}
