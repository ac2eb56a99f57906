"""`lockgate keys create|list|revoke`: a created key works at once, is listed without its secret, and revoked stops."""

from __future__ import annotations

import pytest

from services.cli import keys as keys_cli
from shared import errors, jetstream
from shared.client import LockgateClient
from shared.keys import KeyStore
from shared.schemas.chat import LockgateOptions
from tests.conftest import Mesh
from tests.integration.test_mesh_basic import ask


async def test_create_list_revoke(mesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    ns = mesh.config.nats.namespace
    assert await keys_cli.create(mesh.url, ns, "acme", "pro", ["cheap"]) == 0
    out = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    key, key_id = out["API_KEY"], out["KEY_ID"]

    client = LockgateClient(mesh.client.nc, key, names=mesh.names)
    reply = await client.chat(ask("hello", lockgate=LockgateOptions(route="cheap")))
    assert reply.choices[0].message.content
    with pytest.raises(errors.Forbidden):  # the key may use the "cheap" route only
        await client.chat(ask("hello", model="claude-3-5-haiku"))

    assert await keys_cli.list_(mesh.url, ns, as_json=False) == 0
    listing = capsys.readouterr().out
    assert f"{key_id}\ttenant=acme\ttier=pro\troutes=cheap" in listing
    assert key not in listing  # only hashes are stored, never shown

    assert await keys_cli.revoke(mesh.url, ns, key_id) == 0
    assert await keys_cli.revoke(mesh.url, ns, key_id) == 1  # already gone
    bucket = await jetstream.ensure_bucket(mesh.nc.jetstream(), mesh.names.keys_bucket)
    with pytest.raises(errors.Unauthorized):
        await KeyStore(mesh.config, bucket).resolve(f"Bearer {key}")
