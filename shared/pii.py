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

MAX_SPAN = 1210  # the longest match any pattern above can make (a JWT: 1205), plus slack
FIRST_SCAN = 16  # a stream is first scanned after this many characters ...
BATCH = 256  # ... and then after twice as many, and so on up to every this many characters
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
    if "0" <= c <= "9":
        return b"d"
    if "A" <= c <= "Z":
        return b"U"
    if c in " .()+":
        return b"s"
    return c.encode() if "a" <= c <= "z" or c in "-_" else b"x"


# For text whose digits are all ASCII: one byte per character saying what it is ("d" a digit, "U" a
# capital, "s" a separator, a small letter, "-" or "_" itself, "x" anything else), so that C-speed
# bytes searches find where a pattern can start (a digit run, "UUdd" for an IBAN's country and check
# digits, "UUUU" for an AWS key) without a regex trying every position.
_MARKS = b"".join(_mark(chr(i)) for i in range(256))
_MARK_RUN = re.compile(rb"d[ds-]{6,}")  # _DIGIT_RUN on the marks
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


def _rank(kind: str) -> int:
    return next(i for i, (k, _, _) in enumerate(_PATTERNS) if k == kind)


_R_SECRET, _R_EMAIL, _R_IBAN, _R_IPV6 = _rank("secret"), _rank("email"), _rank("iban"), _rank("ipv6")
_IN_RUNS = tuple(i for i, (k, _, gate) in enumerate(_PATTERNS) if gate == "digit" and k != "iban")


def _candidates(text: str, start: int, endpos: int) -> list[tuple[int, list[re.Match[str]]]]:
    """Raw matches in ``text[start:endpos]`` per pattern (by rank in _PATTERNS), each searched only where
    one can be: at a secret's prefix, around an "@", at an IBAN's start, in a run of digits, near two colons."""
    seg = text[start:endpos]
    out: list[tuple[int, list[re.Match[str]]]] = []
    low = seg.lower()
    marks = None
    if seg.isascii() or not _WIDE_DIGIT.search(seg):  # every digit ASCII: the marks tell digits exactly
        marks = seg.encode("ascii", "replace").translate(_MARKS)  # one byte a character ("?" for non-ASCII)
    # Every secret has a "-" or "_" (sk-, lg-, xox?-, gh?_), or is AKIA/ASIA, a JWT ("eyJ") or a bearer token
    # (single characters first: those tests are memchr calls).
    if (
        "-" in seg
        or "_" in seg
        or ("K" in seg and "AKIA" in seg)
        or ("J" in seg and "eyJ" in seg)
        or ("I" in seg and "ASIA" in seg)
        or "bearer" in low
    ):
        hits = _SECRET_KEYS.find_matches_as_indexes(low, overlapping=True)
        if hits:
            rx = _PATTERNS[_R_SECRET][1]
            if len(low) == len(seg):  # lower() kept every index (it does for ASCII): try the hits only
                out.append((_R_SECRET, _from_starts(rx, text, sorted({start + h[1] for h in hits}), endpos)))
            else:
                out.append((_R_SECRET, list(rx.finditer(text, start, endpos))))
    i = seg.find("@")
    if i >= 0:
        at_signs: list[tuple[int, int]] = []
        while i >= 0:
            at_signs.append((start + i, start + i))
            i = seg.find("@", i + 1)
        rx = _PATTERNS[_R_EMAIL][1]
        out.append((_R_EMAIL, [m for lo, hi in _windows(at_signs, _EMAIL_BEFORE, _EMAIL_AFTER, start, endpos)
                             for m in rx.finditer(text, lo, hi)]))  # fmt: skip
    runs: list[tuple[int, int]] = []
    if marks is not None:
        if 100 in marks:  # a "d" (an int operand: a memchr call)
            i = marks.find(b"UUdd")
            if i >= 0:
                iban_at: list[int] = []
                while i >= 0:
                    iban_at.append(start + i)
                    i = marks.find(b"UUdd", i + 4)  # "UUdd" cannot overlap itself
                out.append((_R_IBAN, _from_starts(_PATTERNS[_R_IBAN][1], text, iban_at, endpos)))
            first = _MARK_RUN.search(marks)
            if first is not None:
                runs = [(r.start() + start, r.end() + start) for r in _MARK_RUN.finditer(marks, first.start())]
    elif _DIGIT.search(seg):
        out.append((_R_IBAN, list(_PATTERNS[_R_IBAN][1].finditer(text, start, endpos))))
        runs = [(r.start(), r.end()) for r in _DIGIT_RUN.finditer(text, start, endpos)]
    if runs:
        # a run from just before its first digit (a "+" or "(") to its end (+1: the look-ahead's character)
        spans = [(max(start, a - 1), min(endpos, b + 1)) for a, b in runs]
        for rank in _IN_RUNS:
            rx = _PATTERNS[rank][1]
            out.append((rank, [m for lo, hi in spans for m in rx.finditer(text, lo, hi)]))
    if ":" in seg:
        colons = [(m.start(), m.end()) for m in _IPV6_GATE.finditer(text, start, endpos)]
        if colons:
            rx = _PATTERNS[_R_IPV6][1]
            out.append((_R_IPV6, [m for lo, hi in _windows(colons, _IPV6_REACH, _IPV6_REACH, start, endpos)
                                for m in rx.finditer(text, lo, hi)]))  # fmt: skip
    return out


def _matches(text: str, start: int, endpos: int, before: int) -> list[tuple[int, int, str]]:
    """Validated, non-overlapping matches in ``text[start:endpos]`` that start before ``before``."""
    candidates = _candidates(text, start, endpos)
    if not candidates:
        return []
    found: list[tuple[int, int, int, str]] = []
    for rank, ms in candidates:
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
    found = _matches(text, start, endpos, before)
    if not found:
        return text[start:before], before
    parts: list[str] = []
    pos = start
    for s, e, kind in found:
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
    of the whole stream, however it is split (but see the forced cut below).

    Pieces are collected and scanned together once enough has come in: first after
    :data:`FIRST_SCAN` characters (so the first words of an answer are not kept
    waiting), then each time the threshold has doubled, up to every :data:`BATCH`
    characters — a feed between two scans costs a list append, and the scan's fixed
    cost is spread over a batch rather than paid per token. A scan sends everything up
    to the last *safe cut* — a line break, or a run of whitespace after a word that no
    pattern can continue across (no digit, not an all-capitals IBAN group, not
    ``Bearer``) — and holds back the rest. So a piece waits for at most the rest of its
    batch plus the unfinished word after it. Text with no safe cut (a long token,
    numbers separated by spaces) is held until it is 2 * MAX_SPAN + 1 characters long,
    then cut after the last character no pattern matches (a comma, a quote…), or, when
    there is none either, MAX_SPAN + 1 characters before its end (in batches of at
    least MAX_SPAN characters, so such a run is scanned about twice, not once per
    piece). Only that last, forced cut can make the output differ from ``redact()`` of
    the whole: a match straddling it is still found whole, but the scan after it
    restarts mid-run.
    """

    __slots__ = ("_batch", "_buf", "_ctx", "_parts", "_pending", "counts")

    _CONTEXT = 8  # characters of already-sent text kept for the patterns' look-behinds

    def __init__(self) -> None:
        self._ctx = ""
        self._buf = ""  # held back at the last scan
        self._parts: list[str] = []  # fed since
        self._pending = 0  # their length
        self._batch = FIRST_SCAN
        self.counts: Counter[str] = Counter()

    @property
    def redactions(self) -> int:
        return sum(self.counts.values())

    def feed(self, text: str) -> str:
        self._parts.append(text)
        self._pending += len(text)
        if self._pending < self._batch:
            return ""
        return self._scan()

    def flush(self) -> str:
        self._take()
        if not self._buf:
            return ""
        return self._emit(len(self._buf), safe=True)

    def _take(self) -> None:
        if self._parts:
            self._buf += "".join(self._parts)
            self._parts = []
            self._pending = 0

    def _scan(self) -> str:
        self._take()
        if self._batch < BATCH:
            self._batch = min(BATCH, 2 * self._batch)
        cut = _safe_cut(self._buf)
        if cut > 0:
            return self._emit(cut, safe=True)
        if len(self._buf) > 2 * MAX_SPAN + 1:
            cut = _hard_cut(self._buf)
            if cut > 0:
                return self._emit(cut, safe=True)
            # nothing to cut at: cut MAX_SPAN + 1 before the end, in batches
            return self._emit(len(self._buf) - MAX_SPAN - 1, safe=False)
        return ""

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


def _safe_cut(buf: str) -> int:
    """The end of the last whitespace run no match can span, or -1 (see StreamRedactor)."""
    n = len(buf)
    floor = n - MAX_SPAN if n > MAX_SPAN else 0
    end = n
    for _ in range(8):  # the last few words only: a digit-dense tail falls back to the forced cut
        if end <= floor:
            return -1
        j = buf.rfind(" ", floor, end)
        lo = j + 1 if j >= 0 else floor
        # rarer than a space, so each search is short: it stops at the space found
        i = buf.rfind("\n", lo, end)
        if i >= 0:
            j, lo = i, i + 1
        i = buf.rfind("\t", lo, end)
        if i >= 0:
            j, lo = i, i + 1
        i = buf.rfind("\r", lo, end)
        if i >= 0:
            j = i
        if j < 0:
            return -1
        if buf[j] in "\n\r":  # a line break: no pattern matches across one, whatever the word before it
            return j + 1
        k = j
        while k > floor and buf[k - 1].isspace():
            k -= 1
        t = max(floor, buf.rfind(" ", floor, k) + 1)  # the word's start, if it is all letters (below)
        token = buf[t:k]
        if not token.isalpha():  # it may hold other whitespace: walk back to the nearest
            t = k
            while t > floor and not buf[t - 1].isspace():
                t -= 1
            token = buf[t:k]
        if t == floor and floor > 0:
            return -1
        if not token or _token_safe(token):
            return j + 1
        end = t
    return -1


# Characters that no pattern matches (nor \w): no match can span one, so a cut right after one is exact.
_HARD = "\n\r,;!?\"'<>[]{}|*&%$#^`\\"


def _hard_cut(buf: str) -> int:
    """The position after the last character of _HARD in ``buf``, or 0 when there is none."""
    return max(buf.rfind(c) for c in _HARD) + 1


def _token_safe(token: str) -> bool:
    """Whether no pattern can continue from this word across the whitespace after it."""
    if token.isalpha():  # no digit (the common case, checked in C)
        return not token.isupper() and token.lower() != "bearer"
    if any(c.isdigit() for c in token):
        return False
    if token.isupper() and token.isalnum():  # an IBAN group ("WEST")
        return False
    return token.lower() != "bearer"
