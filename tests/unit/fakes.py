"""Fakes for unit tests (integration tests use a real nats-server)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import nats.js.errors


@dataclass
class Entry:
    value: bytes
    revision: int


class MemoryKV:
    """get/create/update with JetStream KV's revision semantics; yields between steps like a network."""

    def __init__(self, *, jitter: bool = True) -> None:
        self.data: dict[str, Entry] = {}
        self.seq = 0
        self.ops = 0
        self.jitter = jitter
        self.fail: Exception | None = None

    async def _hop(self) -> None:
        self.ops += 1
        if self.fail is not None:
            raise self.fail
        await asyncio.sleep(0)
        if self.jitter and random.random() < 0.5:
            await asyncio.sleep(0)

    async def get(self, key: str) -> Entry:
        await self._hop()
        if key not in self.data:
            raise nats.js.errors.KeyNotFoundError
        e = self.data[key]
        return Entry(e.value, e.revision)

    async def create(self, key: str, value: bytes) -> int:
        await self._hop()
        if key in self.data:
            raise nats.js.errors.KeyWrongLastSequenceError
        self.seq += 1
        self.data[key] = Entry(value, self.seq)
        return self.seq

    async def update(self, key: str, value: bytes, last: int) -> int:
        await self._hop()
        if key not in self.data or self.data[key].revision != last:
            raise nats.js.errors.KeyWrongLastSequenceError
        self.seq += 1
        self.data[key] = Entry(value, self.seq)
        return self.seq
