"""Human approvals: parked records in the KV bucket ``LOCKGATE_APPROVALS`` and their one decision.

The bucket is the JetStream stream the parked approvals live in (``KV_LOCKGATE_APPROVALS``),
one key per approval, and the decision is written into the same key. Every change is a
revision-checked update from ``pending``, so exactly one of approve, deny (a person, through
``lockgate approvals``, from any machine) and expire (the guard holding the request, when its
wait ends) wins; the others see the decision and report it. The guard replica that holds the
client's request watches its key (a KV watch: an ordered consumer, so a decision made while a
connection flapped is still delivered), so approvals work across guard replicas.

A record holds no prompt and no answer, only a short redacted ``preview``; the request
itself stays in the memory of the guard that serves it (the client's reply inbox is there).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Collection, Iterable
from typing import Any

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared import pii
from shared.headers import now_ms
from shared.jetstream import DAY_S, ensure_bucket
from shared.schemas.approvals import ApprovalRecord, ApprovalStatus
from shared.schemas.chat import ToolCall
from shared.subjects import Names

BUCKET_TTL_S = 7 * DAY_S  # decided and expired records stay listable (`list --all`) this long
PREVIEW_CHARS = 120
_ID = re.compile(r"^ap_[0-9a-f]{12}$")
_SPACE = re.compile(r"\s+")
_record = msgspec.json.Decoder(ApprovalRecord)


class ApprovalConflict(Exception):
    """An approval that cannot be decided: unknown, already decided, or expired (the message says which)."""


# -- pure rules ----------------------------------------------------------------------
def new_id() -> str:
    """Short enough to type: ``ap_`` and 12 hex digits (48 random bits)."""
    return "ap_" + os.urandom(6).hex()


def valid_id(approval_id: str) -> bool:
    return bool(_ID.match(approval_id))


def offered_tools(tools: list[dict[str, Any]] | None) -> list[str]:
    """Names of the tools a request offers: OpenAI ``{"type": "function", "function": {"name"}}`` or a bare ``{"name"}``."""
    names: list[str] = []
    for tool in tools or ():
        fn = tool.get("function")
        name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def called_tools(calls: list[ToolCall] | None) -> list[str]:
    names: list[str] = []
    for call in calls or ():
        if call.function.name not in names:
            names.append(call.function.name)
    return names


def irreversible(names: Iterable[str], listed: Collection[str]) -> list[str]:
    """The names that the config lists as irreversible (exact match), in their order."""
    return [n for n in names if n in listed]


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """A one-line excerpt with PII and secrets redacted, cut to ``limit`` characters."""
    flat = _SPACE.sub(" ", text[: limit * 16]).strip()
    redacted, _ = pii.redact(flat)
    return redacted if len(redacted) <= limit else redacted[: limit - 1] + "…"


def effective_status(rec: ApprovalRecord, now: int) -> ApprovalStatus:
    """A pending record past its expiry is expired, whether or not its guard got to write that."""
    if rec.status == "pending" and now >= rec.expires_ms:
        return "expired"
    return rec.status


def decide(rec: ApprovalRecord, status: ApprovalStatus, by: str, note: str, now: int) -> ApprovalRecord:
    """The record once ``status`` is taken, or ``ApprovalConflict`` when it can no longer be."""
    current = effective_status(rec, now)
    if current == "expired":
        raise ApprovalConflict(f"approval {rec.id} expired {age(now - rec.expires_ms)} ago; nothing to decide")
    if current != "pending":
        who = f" by {rec.decided_by}" if rec.decided_by else ""
        raise ApprovalConflict(f"approval {rec.id} was already {current}{who}")
    return msgspec.structs.replace(rec, status=status, decided_by=by, decided_ms=now, note=note)


def age(ms: int) -> str:
    """``42s``, ``5m``, ``2h10m``, ``3d``."""
    s = max(0, ms) // 1000
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86_400:
        h, m = divmod(s // 60, 60)
        return f"{h}h{m}m" if m else f"{h}h"
    return f"{s // 86_400}d"


# -- the bucket ------------------------------------------------------------------------
async def ensure(js: JetStreamContext, names: Names) -> KeyValue:
    return await ensure_bucket(js, names.approvals_bucket, ttl_s=BUCKET_TTL_S)


class ApprovalStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def park(self, rec: ApprovalRecord) -> None:
        await self.kv.create(rec.id, msgspec.json.encode(rec))

    async def read(self, approval_id: str) -> tuple[ApprovalRecord, int] | None:
        if not valid_id(approval_id):
            return None
        try:
            entry = await self.kv.get(approval_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value or entry.revision is None:
            return None
        return _record.decode(entry.value), entry.revision

    async def decide(self, approval_id: str, status: ApprovalStatus, by: str, note: str = "") -> ApprovalRecord:
        """Approve or deny (``status``); ``ApprovalConflict`` for an unknown, decided or expired id."""
        while True:
            found = await self.read(approval_id)
            if found is None:
                raise ApprovalConflict(f"no approval {approval_id!r} (unknown, or older than 7 days)")
            rec, revision = found
            new = decide(rec, status, by, note, now_ms())
            try:
                await self.kv.update(approval_id, msgspec.json.encode(new), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone else wrote first: read again and report what they decided
            return new

    async def expire(self, approval_id: str) -> ApprovalRecord:
        """Mark a pending record expired; when a decision won the race, that decision."""
        while True:
            found = await self.read(approval_id)
            if found is None:
                raise ApprovalConflict(f"approval {approval_id} vanished from the bucket")
            rec, revision = found
            if rec.status != "pending":
                return rec
            new = msgspec.structs.replace(rec, status="expired", decided_ms=now_ms())
            try:
                await self.kv.update(approval_id, msgspec.json.encode(new), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            return new

    async def wait(self, approval_id: str) -> ApprovalRecord:
        """Watch the record until it is decided or its expiry passes (then expire it)."""
        found = await self.read(approval_id)
        if found is None:
            raise ApprovalConflict(f"approval {approval_id} vanished from the bucket")
        expires_ms = found[0].expires_ms
        watcher = await self.kv.watch(approval_id)
        try:
            async with asyncio.timeout(max(0.0, (expires_ms - now_ms()) / 1000.0)):
                async for entry in watcher:
                    if entry is None or not entry.value:  # the "no more history" marker; a delete
                        continue
                    rec = _record.decode(entry.value)
                    if rec.status != "pending":
                        return rec
        except TimeoutError:
            pass
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it untyped
        return await self.expire(approval_id)

    async def all(self) -> list[ApprovalRecord]:
        """Every record in the bucket, oldest first."""
        try:
            ids = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        found = await asyncio.gather(*(self.read(i) for i in ids))
        return sorted((f[0] for f in found if f is not None), key=lambda r: r.created_ms)
