"""The output blocklist: phrases that must never reach a client, on whole answers and on streams.

Matching is case-, width- and whitespace-insensitive on whole words (NFKC,
casefold, whitespace runs folded to one space). The guard checks whole answers
(services/guard/safety.py); the executor checks streamed text with a
:class:`StreamBlocklist` before a chunk goes out, holding back only as much text
as a phrase can span, so the phrase itself never reaches the client: the stream
ends with ``blocked_output`` instead.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from shared.errors import BlockedOutput

_WS = re.compile(r"\s+")
SLACK = 32  # extra characters held back for whitespace runs inside a phrase


def fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text) if not text.isascii() else text
    return _WS.sub(" ", text.casefold())


class Blocklist:
    """Phrases that must never reach a client (case- and whitespace-insensitive, whole words)."""

    def __init__(self, phrases: list[str]) -> None:
        folded = sorted({fold(p).strip() for p in phrases if p.strip()}, key=len, reverse=True)
        self._rx = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in folded) + r")(?!\w)") if folded else None
        self.longest = len(folded[0]) if folded else 0

    def __bool__(self) -> bool:
        return self._rx is not None

    def hits(self, text: str) -> bool:
        return self._rx is not None and self._rx.search(fold(text)) is not None


@lru_cache(maxsize=64)
def compiled(phrases: tuple[str, ...]) -> Blocklist:
    """One compiled blocklist per phrase set (the policies' lists are few and fixed)."""
    return Blocklist(list(phrases))


class StreamBlocklist:
    """Streamed text in, text safe to send out; ``BlockedOutput`` when a phrase shows up.

    The last ``hold`` characters stay back until more text (or the end) shows they
    do not start a phrase; each check looks at what was held plus the last
    ``hold`` characters already sent (so a phrase across a chunk boundary is seen),
    which keeps the work per piece bounded. A phrase stretched by a whitespace run
    longer than the slack can be seen only after part of it went out.
    """

    def __init__(self, blocklist: Blocklist, stage: str) -> None:
        self._bl = blocklist
        self._stage = stage
        self.hold = blocklist.longest + 1 + SLACK if blocklist else 0
        self._held = ""
        self._sent_tail = ""

    def _check(self, text: str) -> None:
        if self._bl.hits(self._sent_tail + text):
            raise BlockedOutput("the answer contains blocked content (output blocklist)", stage=self._stage)

    def feed(self, text: str) -> str:
        if not self._bl:
            return text
        self._held += text
        if len(self._held) <= self.hold:
            return ""
        self._check(self._held)
        out, self._held = self._held[: -self.hold], self._held[-self.hold :]
        self._sent_tail = (self._sent_tail + out)[-self.hold :]
        return out

    def flush(self) -> str:
        if not self._bl or not self._held:
            return ""
        self._check(self._held)
        out, self._held = self._held, ""
        return out
