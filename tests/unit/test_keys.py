"""API keys: hashing, bearer parsing, and resolution from config and the KV bucket."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import msgspec
import nats.js.errors
import pytest

from shared import config as cfgmod
from shared import keys
from shared.errors import Unauthorized
from shared.keys import KeyStore, Principal


@dataclass
class _Entry:
    value: bytes | None


class FakeBucket:
    """The part of nats.js.kv.KeyValue the key store uses."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.gets = 0

    async def get(self, key: str) -> _Entry:
        self.gets += 1
        if key not in self.data:
            raise nats.js.errors.KeyNotFoundError
        return _Entry(self.data[key])

    async def put(self, key: str, value: bytes) -> int:
        self.data[key] = value
        return len(self.data)

    async def purge(self, key: str) -> None:
        self.data.pop(key, None)


def config_with_key(key: str, routes: list[str] | None = None) -> cfgmod.LockgateConfig:
    extra = f"\nroutes = {msgspec.json.encode(routes).decode()}" if routes is not None else ""
    return cfgmod.parse(
        f"""
[tenants.acme]
[[keys]]
id = "k1"
tenant = "acme"
hash = "{keys.hash_key(key)}"{extra}
"""
    )


def test_hash_is_sha256_hex_and_one_way() -> None:
    key = keys.generate()
    h = keys.hash_key(key)
    assert h == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    assert key not in h
    assert keys.hash_key(key) == h
    assert keys.hash_key(key + "x") != h


def test_generated_keys_are_prefixed_and_unique() -> None:
    generated = {keys.generate() for _ in range(50)}
    assert len(generated) == 50
    assert all(k.startswith("lg-") and len(k) > 30 for k in generated)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("  Bearer   abc  ", "abc"), ("BEARER x-y_z", "x-y_z")],
)
def test_bearer_accepts(header: str, token: str) -> None:
    assert keys.bearer(header) == token


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        (None, "missing API key"),
        ("", "missing API key"),
        ("abc", "malformed"),
        ("Basic abc", "malformed"),
        ("Bearer", "malformed"),
        ("Bearer    ", "malformed"),
        ("Token abc", "malformed"),
    ],
)
def test_bearer_refuses(header: str | None, needle: str) -> None:
    with pytest.raises(Unauthorized, match=needle) as info:
        keys.bearer(header)
    assert info.value.stage == ""  # the stage that checks the key fills itself in


def test_may_use() -> None:
    assert Principal(key_id="a", tenant="t").may_use("anything")
    limited = Principal(key_id="a", tenant="t", routes=["cheap", "gpt-4o-mini"])
    assert limited.may_use("cheap")
    assert limited.may_use("gpt-4o-mini")
    assert not limited.may_use("default")
    assert not Principal(key_id="a", tenant="t", routes=[]).may_use("cheap")


async def test_static_key_from_config_resolves_without_the_bucket() -> None:
    key = keys.generate()
    bucket = FakeBucket()
    store = KeyStore(config_with_key(key, ["cheap"]), bucket)  # type: ignore[arg-type]
    p = await store.resolve(f"Bearer {key}")
    assert p == Principal(key_id="k1", tenant="acme", routes=["cheap"])
    assert bucket.gets == 0


async def test_static_key_defaults_to_all_routes() -> None:
    key = keys.generate()
    p = await KeyStore(config_with_key(key), None).resolve(f"Bearer {key}")
    assert p.routes == ["*"]


async def test_key_registered_in_the_bucket_resolves_and_is_cached() -> None:
    key = keys.generate()
    bucket = FakeBucket()
    await keys.register(bucket, key, Principal(key_id="dev", tenant="dev"))  # type: ignore[arg-type]
    [stored] = bucket.data
    assert ":" not in stored  # KV keys cannot hold ':'
    assert key not in stored
    assert key.encode() not in bucket.data[stored]
    store = KeyStore(cfgmod.parse(""), bucket)  # type: ignore[arg-type]
    assert (await store.resolve(f"Bearer {key}")).tenant == "dev"
    assert (await store.resolve(f"Bearer {key}")).tenant == "dev"
    assert bucket.gets == 1


async def test_unknown_key_is_unauthorized_and_the_miss_is_cached() -> None:
    bucket = FakeBucket()
    store = KeyStore(cfgmod.parse(""), bucket)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(Unauthorized, match="invalid API key"):
            await store.resolve("Bearer lg-nope")
    assert bucket.gets == 1


async def test_revoked_key_stops_working_after_the_ttl() -> None:
    key = keys.generate()
    bucket = FakeBucket()
    await keys.register(bucket, key, Principal(key_id="dev", tenant="dev"))  # type: ignore[arg-type]
    store = KeyStore(cfgmod.parse(""), bucket, ttl_s=0.0)  # type: ignore[arg-type]
    assert (await store.resolve(f"Bearer {key}")).tenant == "dev"
    bucket.data.clear()
    with pytest.raises(Unauthorized):
        await store.resolve(f"Bearer {key}")


async def test_no_bucket_only_static_keys() -> None:
    with pytest.raises(Unauthorized):
        await KeyStore(cfgmod.parse(""), None).resolve("Bearer lg-x")


async def test_an_expired_key_is_refused_and_dropped_from_the_bucket() -> None:
    bucket = FakeBucket()
    live, old = keys.generate(), keys.generate()
    now = int(time.time() * 1000)
    await keys.register(bucket, live, Principal(key_id="job-live", tenant="t", expires_ms=now + 60_000))  # type: ignore[arg-type]
    await keys.register(bucket, old, Principal(key_id="job-old", tenant="t", expires_ms=now - 1))  # type: ignore[arg-type]
    store = KeyStore(cfgmod.parse(""), bucket)  # type: ignore[arg-type]
    assert (await store.resolve(f"Bearer {live}")).key_id == "job-live"
    with pytest.raises(Unauthorized, match="expired API key"):
        await store.resolve(f"Bearer {old}")
    assert keys.bucket_key(old) not in bucket.data
    assert keys.bucket_key(live) in bucket.data
