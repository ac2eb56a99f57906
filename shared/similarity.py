"""A simple semantic-similarity measure for the cache's similar-answer tier.

A request's fingerprint is the set of its words (user, system and developer
messages; lower-cased, Unicode word characters), each kept only as a 32-bit
BLAKE2b hash: the cache and the events never hold the prompt text. Two
requests are similar by the Jaccard index of their sets (shared words over
all words): word order and repetition do not count, synonyms do not match.
It is the cheap tier in front of an embedding model, good for paraphrases
that reuse the question's words.
"""

from __future__ import annotations

import hashlib
import re

from shared.schemas.chat import Message

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_WORDS = 512  # distinct words kept per fingerprint


def fingerprint(messages: list[Message]) -> list[int]:
    words: set[int] = set()
    for m in messages:
        if m.role not in ("user", "system", "developer"):
            continue
        for w in _WORD.findall(m.text().lower()):
            words.add(int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "big"))
            if len(words) >= MAX_WORDS:
                return sorted(words)
    return sorted(words)


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)
