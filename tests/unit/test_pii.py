"""PII and secret redaction: the samples in tests/data, check digits, streams split anywhere, hostile input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import pii

DATA = Path(__file__).parent.parent / "data"
SAMPLES = [
    tuple(ln.split("\t"))
    for ln in (DATA / "pii_samples.txt").read_text(encoding="utf-8").splitlines()
    if ln.strip() and not ln.startswith("#")
]


@pytest.mark.parametrize(("text", "expected"), SAMPLES)
def test_each_sample_is_redacted_as_expected(text: str, expected: str) -> None:
    assert pii.redact(text)[0] == expected


def test_checks_digits() -> None:
    assert pii.luhn_ok("4111111111111111")
    assert not pii.luhn_ok("4111111111111112")
    assert pii.iban_ok("GB82 WEST 1234 5698 7654 32")
    assert not pii.iban_ok("GB00WEST12345698765432")


def test_counts_say_what_was_removed() -> None:
    _, counts = pii.redact("a@b.io, 123-45-6789 and a@c.io")
    assert counts == {"email": 2, "ssn": 1}


STREAM = "\t".join(t for t, _ in SAMPLES) + " trailing words 4111 1111 1111 1111"


def _stream(pieces: list[str]) -> tuple[str, int]:
    r = pii.StreamRedactor()
    out = "".join(r.feed(p) for p in pieces) + r.flush()
    return out, r.redactions


def test_a_match_split_across_chunks_is_redacted() -> None:
    out, n = _stream(["my card is 4111 11", "11 1111 ", "1111 and mail a", "na@exa", "mple.com bye"])
    assert out == "my card is [REDACTED:credit_card] and mail [REDACTED:email] bye"
    assert n == 2


def test_only_the_unfinished_word_is_held_back() -> None:
    r = pii.StreamRedactor()
    assert r.feed("hello there gene") == "hello there "
    assert r.feed("ral kenobi") == "general "
    assert r.flush() == "kenobi"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=400))
def test_any_split_of_a_stream_gives_the_whole_text_redaction(sizes: list[int]) -> None:
    pieces, i = [], 0
    for n in sizes:
        pieces.append(STREAM[i : i + n])
        i += n
    pieces.append(STREAM[i:])
    assert _stream(pieces)[0] == pii.redact(STREAM)[0]


@pytest.mark.parametrize(
    "hostile",
    ["1" * 50_000, "1 " * 25_000, "a" * 50_000 + "@", "a." * 25_000 + "@", "+1" * 25_000, "1-" * 25_000,
     ":" * 50_000, "a:" * 25_000, "sk-" * 16_000, "Bearer " * 7_000, "GB82 " * 10_000, "1." * 25_000],
)  # fmt: skip
def test_hostile_50kb_inputs_finish_quickly(hostile: str) -> None:
    t = time.perf_counter()
    pii.redact(hostile)
    r = pii.StreamRedactor()
    for i in range(0, len(hostile), 16):
        r.feed(hostile[i : i + 16])
    r.flush()
    assert time.perf_counter() - t < 2.0  # generous (whole text and a stream); backtracking would take far longer
