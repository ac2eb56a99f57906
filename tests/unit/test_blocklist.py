"""shared.blocklist: whole answers and streams; a phrase never goes out, whatever the chunking."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.blocklist import Blocklist, StreamBlocklist, compiled
from shared.errors import BlockedOutput

BL = Blocklist(["forbidden phrase", "Secret Sauce"])


def stream(text: str, cuts: list[int], bl: Blocklist = BL) -> tuple[str, BaseException | None]:
    """Feed ``text`` cut at ``cuts``; what went out, and the error that ended it (if any)."""
    sb = StreamBlocklist(bl, "executor")
    out: list[str] = []
    bounds = [0, *sorted(set(cuts)), len(text)]
    try:
        for a, b in itertools.pairwise(bounds):
            out.append(sb.feed(text[a:b]))
        out.append(sb.flush())
    except BlockedOutput as exc:
        return "".join(out), exc
    return "".join(out), None


def test_whole_text_matching_is_case_width_and_whitespace_insensitive_on_whole_words() -> None:
    assert BL.hits("this has a FORBIDDEN   phrase in it")
    fullwidth = "".join(chr(0xFEE0 + ord(c)) if c != " " else c for c in "secret sauce")
    assert BL.hits(fullwidth)  # full-width letters fold (NFKC)
    assert not BL.hits("forbidden phrases are whole words only")
    assert not BL.hits("nothing to see")
    assert not Blocklist([])


def test_compiled_is_shared_per_phrase_set() -> None:
    assert compiled(("a b",)) is compiled(("a b",))


@pytest.mark.parametrize("at", range(1, len("xx forbidden phrase yy")))
def test_a_phrase_split_anywhere_never_goes_out(at: int) -> None:
    text = "xx forbidden phrase yy"
    sent, err = stream(text, [at])
    assert isinstance(err, BlockedOutput)
    assert "forbidden" not in sent.casefold() or "phrase" not in sent.casefold()
    assert not BL.hits(sent)


def test_a_clean_stream_comes_out_whole_and_in_order() -> None:
    text = "word " * 200
    sent, err = stream(text, list(range(0, len(text), 3)))
    assert err is None
    assert sent == text


def test_text_is_held_back_only_as_long_as_a_phrase_can_span() -> None:
    sb = StreamBlocklist(BL, "executor")
    out = sb.feed("a" * 1000)
    assert len(out) == 1000 - sb.hold
    assert sb.hold == len("forbidden phrase") + 1 + 32


def test_without_phrases_everything_passes_at_once() -> None:
    sb = StreamBlocklist(Blocklist([]), "executor")
    assert sb.feed("forbidden phrase") == "forbidden phrase"
    assert sb.flush() == ""


@given(
    prefix=st.text(alphabet="abc ,.\n", max_size=300),
    suffix=st.text(alphabet="abc ,.\n", max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=40),
    tripped=st.booleans(),
)
def test_streamed_verdict_equals_the_whole_text_verdict(
    prefix: str, suffix: str, cuts: list[int], tripped: bool
) -> None:
    text = prefix + (" Secret Sauce " if tripped else " ") + suffix
    cuts = [c for c in cuts if c < len(text)]
    sent, err = stream(text, cuts)
    assert (err is not None) == BL.hits(text)
    if err is None:
        assert sent == text
    else:
        assert not BL.hits(sent)
