"""Output moderation: a configured blocklist, and a hook for a provider's moderation endpoint.

A :class:`Moderator` looks at the answer text and returns the categories it trips
(empty: fine). The guard runs the blocklist (from ``[security] blocklist``, per
route; shared/blocklist.py, which the executor also runs on streams) and then
any moderator hooks it was given; anything tripped is
``blocked_output``. A provider endpoint (OpenAI ``/v1/moderations``, a local
classifier) plugs in as one more ``Moderator`` without touching the guard.
"""

from __future__ import annotations

from typing import Protocol


class Moderator(Protocol):
    async def check(self, text: str) -> list[str]:
        """The categories the text trips (e.g. ``["harassment"]``); empty when it passes."""
        ...
