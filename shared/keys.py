"""API keys: stored only as hashes, resolved to a principal (tenant, routes).

Keys come from the config (``[[keys]]``, hashed) and from the JetStream KV
bucket (``lockgate up`` registers the dev key there; ``lockgate keys`` will
manage it). Lookups are cached in process for a short time so the hot path
does not read KV on every request; a revoked key stops working within the TTL.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.config import LockgateConfig
from shared.errors import Unauthorized

KEY_PREFIX = "lg-"


class Principal(msgspec.Struct, kw_only=True, frozen=True):
    key_id: str
    tenant: str
    routes: list[str] = msgspec.field(default_factory=lambda: ["*"])
    tier: str = ""  # the user tier of the key ("free", "pro"…), for budgets and limits by tier
    created_ms: int = 0
    expires_ms: int = 0  # 0: never (a job's own key expires with the job's results)

    def expired(self, now_ms: int) -> bool:
        return 0 < self.expires_ms <= now_ms

    def may_use(self, name: str) -> bool:
        return "*" in self.routes or name in self.routes


def generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    """Keys are 192-bit random tokens, so a plain SHA-256 is a safe one-way store."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def bearer(authorization: str | None) -> str:
    # The errors carry no stage: whoever checks the key (guard, router) is the stage that refused.
    if not authorization:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
    return token.strip()


_principal_decoder = msgspec.json.Decoder(Principal)


class KeyStore:
    def __init__(self, config: LockgateConfig, bucket: KeyValue | None, *, ttl_s: float = 5.0) -> None:
        self._static = {
            k.hash: Principal(key_id=k.id, tenant=k.tenant, routes=list(k.routes), tier=k.tier) for k in config.keys
        }
        self._bucket = bucket
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def resolve(self, authorization: str | None) -> Principal:
        digest = hash_key(bearer(authorization))
        found = self._static.get(digest)
        if found is not None:
            return found
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            principal = await self._lookup(digest)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl_s, principal)
        if principal is None:
            raise Unauthorized("invalid API key")
        if principal.expired(int(time.time() * 1000)):
            raise Unauthorized("expired API key")
        return principal

    async def _lookup(self, digest: str) -> Principal | None:
        if self._bucket is None:
            return None
        name = digest.replace(":", "_")
        try:
            entry = await self._bucket.get(name)
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        principal = _principal_decoder.decode(entry.value)
        if principal.expired(int(time.time() * 1000)):  # an expired key is only clutter: drop it (best effort)
            with contextlib.suppress(Exception):
                await self._bucket.purge(name)
        return principal


def bucket_key(key: str) -> str:
    """Where a key's principal lives in the KV bucket: its hash (KV keys may not hold ':')."""
    return hash_key(key).replace(":", "_")


async def register(bucket: KeyValue, key: str, principal: Principal) -> None:
    await bucket.put(bucket_key(key), msgspec.json.encode(principal))


async def list_keys(bucket: KeyValue) -> list[tuple[str, Principal]]:
    """Every (bucket key, principal) in the bucket, by tenant then key id. Only hashes are stored."""
    try:
        names = await bucket.keys()
    except nats.js.errors.NoKeysError:
        return []
    out = []
    for name in names:
        try:
            entry = await bucket.get(name)
        except nats.js.errors.KeyNotFoundError:
            continue
        if entry.value:
            try:
                out.append((name, _principal_decoder.decode(entry.value)))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
    return sorted(out, key=lambda kp: (kp[1].tenant, kp[1].key_id))


async def revoke(bucket: KeyValue, key_id: str) -> int:
    """Delete every key with this id; how many were deleted. Resolvers stop accepting it within their TTL."""
    n = 0
    for name, p in await list_keys(bucket):
        if p.key_id == key_id:
            await bucket.purge(name)
            n += 1
    return n
