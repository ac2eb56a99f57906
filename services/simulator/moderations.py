"""OpenAI Moderations wire format (``POST /v1/moderations``): a deterministic word-list classifier.

A text is flagged in a category when it contains one of that category's words
(whole words, case-insensitive); the score is 0.98 for a flagged category and
0.0001 otherwise. The list is small and documented (docs/simulator.md) so tests
can make an answer flaggable (``output=echo``) or keep it clean.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Annotated

import msgspec

_encode = msgspec.json.encode

CATEGORIES: tuple[str, ...] = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)  # fmt: skip
"""Every category OpenAI's moderation models report (each result names them all)."""

WORDS: dict[str, tuple[str, ...]] = {
    "harassment": ("idiot", "moron"),
    "harassment/threatening": ("threaten",),
    "hate": ("hateful",),
    "illicit": ("contraband",),
    "self-harm": ("self-harm",),
    "sexual": ("explicit",),
    "violence": ("kill", "hurt"),
    "violence/graphic": ("gore",),
}
"""The words that flag each category (categories not listed are never flagged)."""

_PATTERNS = {
    cat: re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, words)) + r")(?![\w-])", re.IGNORECASE)
    for cat, words in WORDS.items()
}
FLAGGED_SCORE = 0.98
CLEAN_SCORE = 0.0001


class _ModerationRequest(msgspec.Struct):
    input: str | Annotated[list[str], msgspec.Meta(min_length=1)]
    model: str = "omni-moderation-latest"


_decoder = msgspec.json.Decoder(_ModerationRequest)


def classify(text: str) -> dict[str, bool]:
    """Each category and whether ``text`` trips it."""
    return {cat: cat in _PATTERNS and _PATTERNS[cat].search(text) is not None for cat in CATEGORIES}


def parse(body: bytes) -> tuple[str, list[str]]:
    """``(model, inputs)``; raises ``ValueError`` with a client-facing message."""
    req = _decoder.decode(body)
    return req.model, [req.input] if isinstance(req.input, str) else list(req.input)


class ModerationsWire:
    endpoint = "moderations"

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    def respond(self, model: str, inputs: list[str]) -> bytes:
        results = []
        for text in inputs:
            flags = classify(text)
            results.append(
                {
                    "flagged": any(flags.values()),
                    "categories": flags,
                    "category_scores": {c: FLAGGED_SCORE if on else CLEAN_SCORE for c, on in flags.items()},
                    "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
                }
            )
        return _encode({"id": f"modr-sim{self._id_prefix}{next(self._ids):08x}", "model": model, "results": results})
