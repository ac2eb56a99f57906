"""PII and secret detection and redaction, for whole texts and for streams.

Kinds: ``email``, ``phone``, ``credit_card`` (Luhn-checked), ``iban`` (mod-97 checked),
``ssn`` (US), ``ip`` (IPv4 and IPv6, parsed by :mod:`ipaddress`) and ``secret``
(``sk-…``, ``AKIA…``, ``ghp_…``, Slack tokens, JWTs, ``Bearer …``, Lockgate ``lg-…`` keys).
A match becomes ``[REDACTED:<kind>]``.

Every quantifier is bounded, so no match is longer than :data:`MAX_SPAN` characters
and a scan is linear in the text (50 KB adversarial inputs are tested). The bound is
what lets :class:`StreamRedactor` hold back only a short tail of a stream.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

import ahocorasick_rs

# Each pattern starts with a literal or a character class (its look-behind comes after the first
# character) so the regex engine skips impossible positions in C; each runs only near its trigger
# (a run of digits, "UUdd" for an IBAN, an "@", a secret's prefix, two colons), found by one cheap
# pass (see _candidates). Overlaps: the earlier start wins, then the earlier pattern in this list.
_SECRET = (
    r"(?<![A-Za-z0-9_-])(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,200}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,100}"
    r"|github_pat_[A-Za-z0-9_]{40,120}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,100}"
    r"|lg-[A-Za-z0-9_-]{24,64}"
    r"|eyJ[A-Za-z0-9_-]{8,400}\.[A-Za-z0-9_-]{8,400}\.[A-Za-z0-9_-]{8,400})"
    r"|(?<![A-Za-z0-9])(?i:bearer)[ \t]{1,4}[A-Za-z0-9._~+/-]{16,400}={0,2}"
)
_SECRET_PREFIXES = ("sk-", "akia", "asia", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "lg-", "eyj",
                    "bearer")  # fmt: skip
_PATTERNS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("secret", re.compile(_SECRET), "secret"),
    ("email", re.compile(r"[\w.+-](?<![\w.+-][\w.+-])[\w.+-]{0,63}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,6}(?![\w-])"), "@"),
    ("iban", re.compile(r"[A-Z]{2}\d{2}(?<!\w....)(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), "digit"),
    ("ssn", re.compile(r"\d(?<![\d-]\d)\d{2}-\d{2}-\d{4}(?![\d-])"), "digit"),
    ("credit_card", re.compile(r"\d(?<![\d-]\d)(?:[ -]?\d){12,18}(?![\d-])"), "digit"),
    ("ipv4", re.compile(r"\d(?<![\d.]\d)\d{0,2}(?:\.\d{1,3}){3}(?![\d.])"), "digit"),
    ("ipv6", re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:|:){2,8}(?:[0-9A-Fa-f]{1,4})?(?![\w:])"), "colon"),
    ("phone", re.compile(r"\+(?<![\w+]\+)\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?!\w)"), "digit"),
    ("phone", re.compile(r"\((?<![\w+]\()\d{3}\)[ .-]?\d{3}[ .-]\d{4}(?!\w)"), "digit"),
    ("phone", re.compile(r"\d(?<![\w+]\d)\d{2}[.-]\d{3}[.-]\d{4}(?!\w)"), "digit"),
)  # fmt: skip

MAX_SPAN = 420  # the longest match any pattern above can make (a bearer token), plus slack
KINDS = ("email", "phone", "credit_card", "iban", "ssn", "ip", "secret")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _kind(kind: str, text: str) -> str | None:
    """The kind a match is, or None when the check digits or structure say it is not PII."""
    if kind == "credit_card":
        digits = text.replace(" ", "").replace("-", "")
        return kind if 13 <= len(digits) <= 19 and luhn_ok(digits) else None
    if kind == "iban":
        return kind if iban_ok(text) else None
    if kind == "ssn":
        area, group, serial = text[:3], text[4:6], text[7:]
        bad = area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000"
        return None if bad else kind
    if kind == "ipv4":
        return "ip" if all(int(o) <= 255 for o in text.split(".")) else None
    if kind == "ipv6":
        if not text.strip(":"):
            return None
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return None
        return "ip"
    if kind == "phone":
        n = sum(c.isdigit() for c in text)
        return kind if 9 <= n <= 15 else None
    return kind


_IPV6_GATE = re.compile(r":[0-9A-Fa-f]{0,4}:")  # every IPv6 match has two colons this close
_IPV6_REACH = 48  # an IPv6 match (at most 44 characters) lies within this many characters of a gate hit
_EMAIL_BEFORE, _EMAIL_AFTER = 64, 450  # an email lies in [its "@" - 64, its "@" + 449) (look-ahead included)

# Every secret match starts where one of these (lowercased) starts: one automaton pass finds the
# candidates, and the secret regex is tried only there.
_SECRET_KEYS = ahocorasick_rs.AhoCorasick(_SECRET_PREFIXES)


def _mark(c: str) -> bytes:
    return b"d" if "0" <= c <= "9" else b"U" if "A" <= c <= "Z" else b"s" if c in " .()+-" else b"x"


# For text whose digits are all ASCII: one byte per character saying what it is (digit, capital,
# separator, other), so that C-speed bytes searches find where a pattern can start (a digit run,
# "UUdd" for an IBAN's country and check digits) without a regex trying every position.
_MARKS = b"".join(_mark(chr(i)) for i in range(256))
_MARK_RUN = re.compile(rb"d[ds]{6,}")  # _DIGIT_RUN on the marks
_WIDE_DIGIT = re.compile(r"[^\x00-\x7f\D]")  # a non-ASCII digit (Arabic-Indic, full-width…), which \\d matches too

# Every match of a "digit" pattern except IBAN lies in a run like this (7+ characters of digits and
# phone/card separators), so those patterns only run in such runs — prose with a few numbers costs one scan.
_DIGIT = re.compile(r"\d")
_DIGIT_RUN = re.compile(r"\d[\d .()+-]{6,}")


def _windows(centres: list[tuple[int, int]], before: int, after: int, start: int, endpos: int) -> list[tuple[int, int]]:
    """The spans ``[a - before, b + after)`` around each ``(a, b)``, clipped to the segment and merged."""
    out: list[tuple[int, int]] = []
    for a, b in centres:
        lo, hi = max(start, a - before), min(endpos, b + after)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _from_starts(rx: re.Pattern[str], text: str, starts: list[int], endpos: int) -> list[re.Match[str]]:
    """What ``rx.finditer`` over the segment gives, when every match starts at one of ``starts`` (sorted)."""
    found: list[re.Match[str]] = []
    last = -1
    for p in starts:
        if p < last:
            continue
        m = rx.match(text, p, endpos)
        if m is not None:
            found.append(m)
            last = m.end() if m.end() > p else p + 1
    return found


def _candidates(text: str, start: int, endpos: int) -> list[tuple[int, list[re.Match[str]]]]:
    """Each pattern's raw matches in ``text[start:endpos]``, by its rank in _PATTERNS, searched only where
    one can be: around an "@", at a secret prefix, in a run of digits, near two colons."""
    seg = text[start:endpos]
    out: list[tuple[int, list[re.Match[str]]]] = []
    ascii_seg = seg.isascii()  # a flag in CPython: no scan
    digit_runs: list[tuple[int, int]] | None = None  # None: no digit at all
    iban_at: list[int] | None = None  # where an IBAN can start; None: anywhere (non-ASCII text)
    if ascii_seg or not _WIDE_DIGIT.search(seg):  # every digit ASCII: the marks tell digits exactly
        marks = seg.encode("ascii", "replace").translate(_MARKS)  # one byte a character ("?" for non-ASCII)
        if b"d" in marks:
            digit_runs = [(m.start() + start, m.end() + start) for m in _MARK_RUN.finditer(marks)]
            iban_at = []
            i = marks.find(b"UUdd")
            while i >= 0:
                iban_at.append(start + i)
                i = marks.find(b"UUdd", i + 4)  # "UUdd" cannot overlap itself
    elif _DIGIT.search(seg):
        digit_runs = [(m.start(), m.end()) for m in _DIGIT_RUN.finditer(text, start, endpos)]
    secret_at: list[int] | None = None
    low = seg.lower()
    hits = _SECRET_KEYS.find_matches_as_indexes(low, overlapping=True)
    if hits and len(low) == len(seg):  # lower() kept every index (it does for ASCII): try the hits only
        secret_at = sorted({start + h[1] for h in hits})
    at_signs: list[tuple[int, int]] = []
    i = seg.find("@")
    while i >= 0:
        at_signs.append((start + i, start + i))
        i = seg.find("@", i + 1)
    colons = [(m.start(), m.end()) for m in _IPV6_GATE.finditer(text, start, endpos)] if ":" in seg else []
    for rank, (kind, rx, gate) in enumerate(_PATTERNS):
        spans: list[tuple[int, int]]
        if gate == "secret":
            if not hits:
                continue
            if secret_at is not None:
                out.append((rank, _from_starts(rx, text, secret_at, endpos)))
                continue
            spans = [(start, endpos)]
        elif gate == "@":
            spans = _windows(at_signs, _EMAIL_BEFORE, _EMAIL_AFTER, start, endpos)
        elif gate == "colon":
            spans = _windows(colons, _IPV6_REACH, _IPV6_REACH, start, endpos)
        elif digit_runs is None:
            continue
        elif kind == "iban":
            if iban_at is not None:
                out.append((rank, _from_starts(rx, text, iban_at, endpos)))
                continue
            spans = [(start, endpos)]
        else:
            # a run from just before its first digit (a "+" or "(") to its end (+1: the look-ahead's character)
            spans = [(max(start, a - 1), min(endpos, b + 1)) for a, b in digit_runs]
        ms: list[re.Match[str]] = []
        for lo, hi in spans:
            ms.extend(rx.finditer(text, lo, hi))
        out.append((rank, ms))
    return out


def _matches(text: str, start: int, endpos: int, before: int) -> list[tuple[int, int, str]]:
    """Validated, non-overlapping matches in ``text[start:endpos]`` that start before ``before``."""
    found: list[tuple[int, int, int, str]] = []
    for rank, ms in _candidates(text, start, endpos):
        kind = _PATTERNS[rank][0]
        for m in ms:
            if m.start() >= before:
                break
            k = _kind(kind, m.group())
            if k is not None:
                found.append((m.start(), rank, m.end(), k))
    found.sort()
    chosen: list[tuple[int, int, str]] = []
    last = start
    for s, _, e, k in found:
        if s >= last:
            chosen.append((s, e, k))
            last = e
    return chosen


def _redact(text: str, counts: Counter[str], start: int, endpos: int, before: int) -> tuple[str, int]:
    """Redact ``text[start:…]`` up to ``before`` (or the end of a match straddling it); returns it and its end."""
    parts: list[str] = []
    pos = start
    for s, e, kind in _matches(text, start, endpos, before):
        parts.append(text[pos:s])
        parts.append(f"[REDACTED:{kind}]")
        counts[kind] += 1
        pos = e
    end = max(pos, before)
    parts.append(text[pos:end])
    return "".join(parts), end


def redact(text: str) -> tuple[str, Counter[str]]:
    """The text with every PII match replaced by a placeholder, and the count per kind."""
    counts: Counter[str] = Counter()
    out, _ = _redact(text, counts, 0, len(text), len(text))
    return out, counts


class StreamRedactor:
    """Redacts a stream of text pieces, holding back only what a match could still extend into.

    ``feed(piece)`` returns the text that is now safe to send (redacted); ``flush()``
    returns the rest at the end of the stream. The output, joined, equals ``redact()``
    of the whole stream. What is held back: the tail after the last *safe cut* — a run
    of whitespace after a word that no pattern can continue across (no digit, not an
    all-capitals IBAN group, not ``Bearer``) — and never more than :data:`MAX_SPAN` + 1
    characters once a cut is forced (then it cuts in batches of at least MAX_SPAN
    characters, so a long run without a safe cut is scanned about twice, not once per piece).
    """

    _CONTEXT = 8  # characters of already-sent text kept for the patterns' look-behinds

    def __init__(self) -> None:
        self._ctx = ""
        self._buf = ""
        self.counts: Counter[str] = Counter()

    @property
    def redactions(self) -> int:
        return sum(self.counts.values())

    def feed(self, text: str) -> str:
        self._buf += text
        cut = _safe_cut(self._buf)
        if cut > 0:
            return self._emit(cut, safe=True)
        if len(self._buf) > 2 * MAX_SPAN + 1:  # no safe cut: cut MAX_SPAN + 1 before the end, in batches
            return self._emit(len(self._buf) - MAX_SPAN - 1, safe=False)
        return ""

    def flush(self) -> str:
        if not self._buf:
            return ""
        return self._emit(len(self._buf), safe=True)

    def _emit(self, cut: int, *, safe: bool) -> str:
        ctx, buf = self._ctx, self._buf
        whole = ctx + buf
        off = len(ctx)
        # No match reaches past a safe cut; past a forced one a match reaches at most MAX_SPAN further.
        endpos = off + (cut if safe else min(len(buf), cut + MAX_SPAN + 1))
        out, end = _redact(whole, self.counts, off, endpos, off + cut)
        self._ctx = whole[max(0, end - self._CONTEXT) : end]
        self._buf = whole[end:]
        return out


_WS = (" ", "\n", "\t", "\r")


def _safe_cut(buf: str) -> int:
    """The end of the last whitespace run no match can span, or -1 (see StreamRedactor)."""
    floor = max(0, len(buf) - MAX_SPAN)
    end = len(buf)
    for _ in range(8):  # the last few words only: a digit-dense tail falls back to the forced cut
        if end <= floor:
            return -1
        j = max(buf.rfind(w, floor, end) for w in _WS)
        if j < 0:
            return -1
        k = j
        while k > floor and buf[k - 1].isspace():
            k -= 1
        t = k
        while t > floor and not buf[t - 1].isspace():
            t -= 1
        if t == floor and floor > 0:
            return -1
        token = buf[t:k]
        if not token or _token_safe(token):
            return j + 1
        end = t
    return -1


def _token_safe(token: str) -> bool:
    """Whether no pattern can continue from this word across the whitespace after it."""
    if any(c.isdigit() for c in token):
        return False
    if token.isupper() and token.isalnum():  # an IBAN group ("WEST")
        return False
    return token.lower() != "bearer"
