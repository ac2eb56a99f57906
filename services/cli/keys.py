"""`lockgate keys create|list|revoke`: API keys in the JetStream KV bucket, stored only as hashes."""

from __future__ import annotations

import datetime as dt
import secrets
import sys

import msgspec
import nats

from shared import jetstream, keys
from shared.headers import now_ms
from shared.subjects import Names


async def create(nats_url: str, namespace: str, tenant: str, tier: str, routes: list[str]) -> int:
    if not tenant.strip():
        print("error: --tenant is required", file=sys.stderr)
        return 2
    nc = await nats.connect(nats_url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        bucket = await jetstream.ensure_bucket(nc.jetstream(), Names(namespace).keys_bucket)
        key = keys.generate()
        key_id = "k-" + secrets.token_hex(4)
        p = keys.Principal(key_id=key_id, tenant=tenant, routes=routes or ["*"], tier=tier, created_ms=now_ms())
        await keys.register(bucket, key, p)
    finally:
        await nc.drain()
    print(f"KEY_ID={key_id}")
    print(f"API_KEY={key}")
    print("The key is shown once; only its hash is stored.", file=sys.stderr)
    return 0


async def list_(nats_url: str, namespace: str, as_json: bool) -> int:
    nc = await nats.connect(nats_url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        bucket = await jetstream.ensure_bucket(nc.jetstream(), Names(namespace).keys_bucket)
        rows = await keys.list_keys(bucket)
    finally:
        await nc.drain()
    for name, p in rows:
        if as_json:
            print(msgspec.json.encode({**msgspec.to_builtins(p), "hash": name.replace("_", ":", 1)}).decode())
        else:
            expires = f"\texpires={_iso(p.expires_ms)}" if p.expires_ms else ""
            print(f"{p.key_id}\ttenant={p.tenant}\ttier={p.tier or '-'}\troutes={','.join(p.routes)}{expires}")
    return 0


async def revoke(nats_url: str, namespace: str, key_id: str) -> int:
    nc = await nats.connect(nats_url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        bucket = await jetstream.ensure_bucket(nc.jetstream(), Names(namespace).keys_bucket)
        n = await keys.revoke(bucket, key_id)
    finally:
        await nc.drain()
    if not n:
        print(f"error: no key with id {key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {key_id} (resolvers drop it within their cache TTL, 5 s)")
    return 0


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
