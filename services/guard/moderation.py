"""Output moderation: a configured blocklist, and a hook for a provider's moderation endpoint.

A :class:`Moderator` looks at the answer text and returns the categories it trips
(empty: fine). The guard runs the blocklist (from ``[security] blocklist``, per
route) and then any moderator hooks it was given; anything tripped is
``blocked_output``. A provider endpoint (OpenAI ``/v1/moderations``, a local
classifier) plugs in as one more ``Moderator`` without touching the guard.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol


class Moderator(Protocol):
    async def check(self, text: str) -> list[str]:
        """The categories the text trips (e.g. ``["harassment"]``); empty when it passes."""
        ...


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text) if not text.isascii() else text
    return re.sub(r"\s+", " ", text.casefold())


class Blocklist:
    """Phrases that must never reach a client (case- and whitespace-insensitive, whole words)."""

    def __init__(self, phrases: list[str]) -> None:
        folded = sorted({_fold(p).strip() for p in phrases if p.strip()}, key=len, reverse=True)
        self._rx = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in folded) + r")(?!\w)") if folded else None

    def __bool__(self) -> bool:
        return self._rx is not None

    def hits(self, text: str) -> bool:
        return self._rx is not None and self._rx.search(_fold(text)) is not None
