"""``python -m services.cli.bench_safety``: the cost of the guard's input checks, the validator and redaction.

No NATS: the functions the guard and validator run per request, timed in process.
Prompts are English-like prose with a few numbers (deterministic); a "dense" row
repeats the benign corpus, which mentions "ignore"/"system" in most sentences
(the detector's worst realistic case: most sentences hold a literal where a pattern could begin).
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from services.guard import injection, inputs, safety
from services.validator.handlers import validate
from shared import pii
from shared.config import LimitsConfig
from shared.schemas.chat import ChatRequest, ResponseFormat
from shared.schemas.chat import Message as Msg
from shared.schemas.mesh import ValidateRequest
from shared.security import Policy

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "this",
    "are",
    "or",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "one",
    "all",
    "we",
    "their",
    "report",
    "customer",
    "order",
    "shipping",
    "invoice",
    "team",
    "meeting",
    "project",
    "data",
    "model",
    "quarter",
    "revenue",
    "growth",
    "design",
    "review",
    "plan",
    "launch",
    "update",
    "summary",
    "question",
    "answer",
    "policy",
    "account",
    "service",
]
_CORPUS = Path(__file__).resolve().parents[2] / "tests" / "data" / "benign_prompts.txt"


def prose(size: int, seed: int = 7) -> str:
    rnd = random.Random(seed)
    parts: list[str] = []
    n = 0
    while n < size:
        s = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(8, 20))).capitalize()
        if rnd.random() < 0.2:
            s += f" ({rnd.randint(1, 999)} units, {rnd.randint(1, 28)}/{rnd.randint(1, 12)})"
        parts.append(s + ".")
        n += len(s) + 2
    return " ".join(parts)[:size]


def dense(size: int) -> str:
    lines = [ln for ln in _CORPUS.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
    text = ""
    while len(text) < size:
        text += " ".join(lines) + " "
    return text[:size]


def timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    for _ in range(min(20, n)):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def input_checks(text: str) -> Callable[[], object]:
    req = ChatRequest(messages=[Msg(role="system", content="Be brief."), Msg(role="user", content=text)])
    limits = LimitsConfig()
    policy = Policy(injection="flag", pii_input="redact")

    def run() -> object:
        inputs.check(req, limits)
        return safety.screen_input(req, policy)

    return run


def stream_mb_s(text: str, chunk: int) -> float:
    pieces = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    r = pii.StreamRedactor()
    t = time.perf_counter()
    for p in pieces:
        r.feed(p)
    r.flush()
    return len(text.encode()) / (time.perf_counter() - t) / 1e6


def whole_mb_s(text: str) -> float:
    t = time.perf_counter()
    pii.redact(text)
    return len(text.encode()) / (time.perf_counter() - t) / 1e6


class _PassThrough:
    """The least a per-piece ``feed`` can cost (a method call that keeps the piece): the floor for streams."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def feed(self, text: str) -> str:
        self.parts.append(text)
        return ""


def passthrough_mb_s(text: str, chunk: int) -> float:
    pieces = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    r = _PassThrough()
    t = time.perf_counter()
    for p in pieces:
        r.feed(p)
    "".join(r.parts)
    return len(text.encode()) / (time.perf_counter() - t) / 1e6


def _keywords_by_find(low: str) -> int:
    """The detector's keyword search as it was before the automaton: one ``str.find`` pass per keyword."""
    n = 0
    for k in injection._KEY_LIST:
        i = low.find(k)
        while i >= 0:
            n += 1
            i = low.find(k, i + 1)
    return n


def _median(fn: Callable[[], float], n: int = 5) -> float:
    return statistics.median(fn() for _ in range(n))


def main() -> None:
    print("all input checks (limits + injection + PII redaction), per request, ms")
    for label, make in (("prose", prose), ("dense", dense)):
        for size in (1_000, 10_000, 50_000):
            n = 2_000 if size <= 10_000 else 300
            p50, p99 = timed(input_checks(make(size)), n)
            print(f"  {label:5} {size // 1000:>3} KB  p50 {p50:7.3f}  p99 {p99:7.3f}")
    print("each check alone, 50 KB, p50 ms")
    limits = LimitsConfig()
    for label, make in (("prose", prose), ("dense", dense)):
        text = make(50_000)
        req = ChatRequest(messages=[Msg(role="system", content="Be brief."), Msg(role="user", content=text)])
        low = text.lower()
        checks = (
            ("limits", functools.partial(inputs.check, req, limits)),
            ("injection", functools.partial(injection.score, text)),
            ("PII", functools.partial(pii.redact, text)),
            ("  keyword automaton", functools.partial(injection._keyword_hits, low)),
            ("  a find per keyword (before)", functools.partial(_keywords_by_find, low)),
        )
        row = {name: timed(fn, 200)[0] for name, fn in checks}
        ratio = row["  a find per keyword (before)"] / row["  keyword automaton"]
        print(
            f"  {label:5} " + "  ".join(f"{k.strip()} {v:.3f}" for k, v in row.items()) + f"  (automaton {ratio:.1f}x)"
        )
    answer = '{"summary": "' + prose(900) + '", "items": [1, 2, 3]}'
    fenced = "Here you go:\n```json\n" + answer.replace('"items": [1, 2, 3]', '"items": [1, 2, 3,],') + "\n```"
    fmt = ResponseFormat(type="json_object")
    for label, content in (("valid", answer), ("repaired", fenced)):
        p50, p99 = timed(functools.partial(validate, ValidateRequest(content=content, response_format=fmt)), 2_000)
        print(f"validator, 1 KB JSON ({label}): p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    for size in (1_000, 10_000, 50_000):
        p50, p99 = timed(functools.partial(pii.redact, prose(size, seed=3)), 300)
        print(f"output redaction (whole answer) {size // 1000:>3} KB: p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    text = prose(1_000_000, seed=11)
    whole = _median(functools.partial(whole_mb_s, text))
    print(f"stream redaction, MB/s (median of 5; 1 MB; whole-text redaction of the same text: {whole:.1f} MB/s)")
    for chunk in (4, 16, 64, 256, 4096):
        mb_s = _median(functools.partial(stream_mb_s, text, chunk))
        floor = _median(functools.partial(passthrough_mb_s, text, chunk))
        print(f"  {chunk:>4}-character pieces: {mb_s:6.1f}  (a feed that only keeps the piece: {floor:6.1f}; "
              f"{mb_s / whole:.2f} of whole-text)")  # fmt: skip


if __name__ == "__main__":
    main()
