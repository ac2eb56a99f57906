"""`lockgate approvals list|approve|deny` as an operator runs it: a real process against the test nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from shared import errors
from shared.schemas.chat import ChatResponse
from tests.conftest import Mesh, MeshFactory
from tests.integration.test_mesh_approvals import PAYMENT_TOOLS, TOOL_CALL, approval_mesh, needs_approval, pending
from tests.integration.test_mesh_basic import ask

ROOT = Path(__file__).resolve().parents[2]


async def lockgate(mesh: Mesh, *args: str, user: str = "") -> tuple[int, str, str]:
    """Run the command (without blocking the loop the mesh runs on); (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "USER"}
    if user:
        env["USER"] = user
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "approvals", *args, "--nats", mesh.url,
        "--namespace", mesh.config.nats.namespace, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_list_shows_what_waits_redacted_and_approve_releases_it(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory)
    secret = "sk-" + "Q" * 40
    call = asyncio.create_task(mesh.client.chat(needs_approval(f"Refund jane@example.com, key {secret}"), timeout_s=60))
    [rec] = await pending(store)

    code, out, _ = await lockgate(mesh, "list")
    assert code == 0
    [row] = out.splitlines()
    assert row.startswith(f"{rec.id}\ttenant=dev\tage=")
    assert "\texpires_in=" in row
    assert "\tkind=request\tmodel=gpt-4o-mini\ttools=-\tpreview=" in row
    assert "jane@example.com" not in out
    assert secret not in out
    assert "[REDACTED:email]" in out

    code, out, _ = await lockgate(mesh, "approve", rec.id, "--by", "alice")
    assert code == 0
    assert out.startswith(f"approved {rec.id}")
    reply: ChatResponse = await asyncio.wait_for(call, 20)
    assert reply.choices[0].message.content.startswith("Simulated reply")

    code, _, err = await lockgate(mesh, "approve", rec.id)
    assert code == 1
    assert f"approval {rec.id} was already approved by alice" in err
    code, out, err = await lockgate(mesh, "list")
    assert (code, out) == (0, "")
    assert "no pending approvals" in err
    code, out, _ = await lockgate(mesh, "list", "--all")
    assert code == 0
    assert f"{rec.id}\t" in out
    assert "status=approved:alice" in out


async def test_deny_gives_the_client_approval_denied_with_the_reason(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory)
    req = ask("Pay the supplier" + TOOL_CALL, model="gpt-4o-mini", tools=PAYMENT_TOOLS)
    call = asyncio.create_task(mesh.client.chat(req, timeout_s=60))
    [rec] = await pending(store)

    code, out, _ = await lockgate(mesh, "list", "--json")
    assert code == 0
    [listed] = [json.loads(line) for line in out.splitlines()]
    assert listed["id"] == rec.id
    assert listed["kind"] == "answer"
    assert listed["tools"] == ["send_payment"]
    assert listed["status"] == "pending"

    code, out, _ = await lockgate(mesh, "deny", rec.id, "--reason", "supplier not verified", user="carol")
    assert code == 0
    assert out.startswith(f"denied {rec.id}")
    with pytest.raises(errors.ApprovalDenied) as denied:
        await asyncio.wait_for(call, 20)
    assert "denied by carol" in denied.value.message
    assert "supplier not verified" in denied.value.message

    code, _, err = await lockgate(mesh, "approve", rec.id)
    assert code == 1
    assert "already denied by carol" in err


@pytest.mark.parametrize("approval_id", ["ap_000000000000", "not-an-id"])
async def test_an_unknown_id_is_a_clear_error_and_exit_1(mesh_factory: MeshFactory, approval_id: str) -> None:
    mesh, _ = await approval_mesh(mesh_factory)
    for verb in ("approve", "deny"):
        code, out, err = await lockgate(mesh, verb, approval_id)
        assert code == 1
        assert out == ""
        assert f"error: no approval {approval_id!r}" in err


async def test_an_expired_approval_cannot_be_approved(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory, timeout_s=1)
    with pytest.raises(errors.ApprovalExpired):
        await mesh.client.chat(needs_approval("Too slow"), timeout_s=30)
    [rec] = await store.all()
    code, _, err = await lockgate(mesh, "approve", rec.id)
    assert code == 1
    assert f"approval {rec.id} expired" in err
