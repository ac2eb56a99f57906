"""PII and secret redaction: the samples in tests/data, check digits, streams split anywhere, hostile input."""

from __future__ import annotations

import re
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


def _reference(text: str) -> list[tuple[int, int, str]]:
    """Every pattern over the whole text, no pre-filter: what ``pii._matches`` must find."""
    found = []
    for rank, (kind, rx, _) in enumerate(pii._PATTERNS):
        for m in rx.finditer(text):
            k = pii._kind(kind, m.group())
            if k is not None:
                found.append((m.start(), rank, m.end(), k))
    chosen, last = [], 0
    for s, _, e, k in sorted(found):
        if s >= last:
            chosen.append((s, e, k))
            last = e
    return chosen


ATOMS = [t for t, _ in SAMPLES] + [
    "a@b.co", "x", " ", "\n", "é", "\u0663", "\uff13", "\u0130", "sk-", "Bearer ", "bEaReR\t", "AKIA", "Asia", "GB82", "WEST", "1234",
    "::", ":", "12:30", "+1", "(555)", "-", ".", "@", "eyJ", "ghp_", "github_pat_", "xoxb-", "lg-", "_", "AB12",
    "abcdefghijklmnopqrstuvwxyz0123456789", "2001:db8::1", "DE89370400440532013000", "4111111111111111", "\u017fk-", "\uff15\uff15\uff15-\uff11\uff12\uff13-\uff14\uff15\uff16\uff17",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(ATOMS), max_size=40))
def test_the_pre_filters_lose_no_match(atoms: list[str]) -> None:
    text = "".join(atoms)
    assert pii._matches(text, 0, len(text), len(text)) == _reference(text)


def test_the_pre_filters_lose_no_match_far_from_their_trigger() -> None:
    # matches at the edge of the windows around "@", two colons and a secret prefix
    for text in ["x" * 63 + "@" + "d" * 63 + ".io", "a" * 64 + "@example.com", "1:2:3:4:5:6:7:8 " * 3,
                 "Bearer " + "t" * 400, "eyJ" + "a" * 400 + "." + "b" * 400 + "." + "c" * 400,
                 "u@" + ".".join(["d" * 63] * 7)]:  # fmt: skip
        assert pii._matches(text, 0, len(text), len(text)) == _reference(text), text[:40]


STREAM = "\t".join(t for t, _ in SAMPLES) + " trailing words 4111 1111 1111 1111"


def _stream(pieces: list[str]) -> tuple[str, int]:
    r = pii.StreamRedactor()
    out = "".join(r.feed(p) for p in pieces) + r.flush()
    return out, r.redactions


def test_a_match_split_across_chunks_is_redacted() -> None:
    out, n = _stream(["my card is 4111 11", "11 1111 ", "1111 and mail a", "na@exa", "mple.com bye"])
    assert out == "my card is [REDACTED:credit_card] and mail [REDACTED:email] bye"
    assert n == 2


def test_pieces_wait_for_a_scan_then_only_the_unfinished_word_is_held_back() -> None:
    r = pii.StreamRedactor()
    assert r.feed("hello there") == ""  # fewer than FIRST_SCAN characters: no scan yet
    assert r.feed(" gene") == "hello there "  # 16 characters: scanned, up to the last safe cut
    assert r.feed("ral kenobi") == ""  # the next scan waits for twice as many new characters
    assert r.flush() == "general kenobi"


def test_a_stream_is_scanned_in_batches_that_grow_to_batch() -> None:
    words = ("lorem ipsum dolor sit amet " * 200)[: 4 * pii.BATCH]
    r = pii.StreamRedactor()
    sent = 0
    waits = []
    for i in range(0, len(words), 4):
        out = r.feed(words[i : i + 4])
        sent += len(out)
        waits.append(i + 4 - sent)  # characters fed but not yet sent
    assert sent > 0
    assert max(waits) <= pii.BATCH + len("lorem ")  # a batch, plus the word it ends in
    assert sent + len(r.flush()) == len(words)


# Text with no safe cut for longer than MAX_SPAN: a long JWT, a long email, a column of numbers.
LONG = (
    "jwt eyJ" + "a" * 390 + "." + "b" * 390 + "." + "c" * 390 + " then "
    + "mail " + "x" * 60 + "@" + ".".join(["d" * 60] * 6) + " and "
    + "\n".join(f"{i} {i * 7} 4111 1111 1111 1111" for i in range(60)) + " end"
)  # fmt: skip


def test_max_span_bounds_every_pattern() -> None:
    for _, rx, _ in pii._PATTERNS:
        assert re._parser.parse(rx.pattern).getwidth()[1] <= pii.MAX_SPAN  # type: ignore[attr-defined]


def test_a_match_longer_than_the_old_hold_back_is_redacted_whole_in_a_stream() -> None:
    whole = pii.redact(LONG)[0]
    assert "[REDACTED:secret] then" in whole
    assert "mail [REDACTED:email] and" in whole
    for size in (1, 4, 16, 256, 5000):
        assert _stream([LONG[i : i + size] for i in range(0, len(LONG), size)])[0] == whole, size


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=60))
def test_any_split_of_a_long_stream_gives_the_whole_text_redaction(sizes: list[int]) -> None:
    text = STREAM + " " + LONG + " " + STREAM
    pieces, i = [], 0
    for n in sizes:
        pieces.append(text[i : i + n])
        i += n
    pieces.append(text[i:])
    assert _stream(pieces)[0] == pii.redact(text)[0]


@pytest.mark.parametrize(
    "hostile",
    ["1" * 50_000, "1 " * 25_000, "a" * 50_000 + "@", "a." * 25_000 + "@", "+1" * 25_000, "1-" * 25_000,
     ":" * 50_000, "a:" * 25_000, "sk-" * 16_000, "Bearer " * 7_000, "GB82 " * 10_000, "1." * 25_000,
     "@" * 50_000, "a@" * 25_000, "AB12" * 12_500, "eyJ" * 16_000, "eyJa." * 10_000, "4111 1111 1111 1111 " * 2_500,
     "x" * 50_000, "sk-" + "a" * 50_000, "1\n" * 25_000, "," * 50_000, "a-" * 25_000, "bearer\t" * 7_000],
)  # fmt: skip
def test_hostile_50kb_inputs_finish_quickly(hostile: str) -> None:
    t = time.perf_counter()
    whole, _ = pii.redact(hostile)
    r = pii.StreamRedactor()
    out = [r.feed(hostile[i : i + 16]) for i in range(0, len(hostile), 16)]
    out.append(r.flush())
    assert time.perf_counter() - t < 2.0  # generous (whole text and a stream); backtracking would take far longer
    assert "".join(out) == whole
