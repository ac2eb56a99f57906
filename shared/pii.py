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

# Each pattern starts with a literal or a character class (its look-behind comes after the first
# character) so the regex engine skips impossible positions in C; each runs only when its gate (a
# digit, an "@", a key prefix, two colons) is in the text. Overlaps: the earlier start wins, then
# the earlier pattern in this list.
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


def _gates(text: str, start: int, end: int) -> set[str]:
    gates: set[str] = set()
    seg = text[start:end]
    if _DIGIT.search(seg):
        gates.add("digit")
    if "@" in seg:
        gates.add("@")
    if _IPV6_GATE.search(seg):
        gates.add("colon")
    low = seg.lower()
    if any(p in low for p in _SECRET_PREFIXES):
        gates.add("secret")
    return gates


# Every match of a "digit" pattern except IBAN lies in a run like this (7+ characters of digits and
# phone/card separators), so those patterns only run in such runs — prose with a few numbers costs one scan.
_DIGIT = re.compile(r"\d")
_DIGIT_RUN = re.compile(r"\d[\d .()+-]{6,}")


def _matches(text: str, start: int, endpos: int, before: int) -> list[tuple[int, int, str]]:
    """Validated, non-overlapping matches in ``text[start:endpos]`` that start before ``before``."""
    gates = _gates(text, start, endpos)
    if not gates:
        return []
    runs: list[tuple[int, int]] = []
    if "digit" in gates:
        # a run from just before its first digit (a "+" or "(") to its end (+1: the look-ahead's character)
        runs = [(max(start, m.start() - 1), min(endpos, m.end() + 1)) for m in _DIGIT_RUN.finditer(text, start, endpos)]
    whole = [(start, endpos)]
    found: list[tuple[int, int, int, str]] = []
    for rank, (kind, rx, gate) in enumerate(_PATTERNS):
        if gate not in gates:
            continue
        for lo, hi in runs if gate == "digit" and kind != "iban" else whole:
            for m in rx.finditer(text, lo, hi):
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
