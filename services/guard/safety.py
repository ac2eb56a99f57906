"""The guard's input and output safety checks, applied under the route's policy.

Input (after the route is known, before cache and budget): prompt-injection
scoring of user, tool and untrusted messages (block → ``blocked_input``, flag →
noted in the reply's ``lockgate.security`` and the audit record); PII and
secrets (redact in place, block, or allow); untrusted messages wrapped in
delimiters with an instruction to treat them as data. Output (before the client
sees a non-streamed answer): the blocklist, the route's provider moderation
and moderation hooks (``blocked_output``, the findings name the blocklist or
the categories), then PII redaction. Findings name signals and kinds only,
never the text that matched, so they are safe for logs and audit records.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec

from services.guard import injection
from services.guard.moderation import Moderator
from shared import pii
from shared.blocklist import compiled
from shared.errors import BlockedInput, BlockedOutput, InvalidRequest, LockgateError
from shared.schemas.chat import ChatRequest, Message
from shared.security import Policy
from shared.subjects import GUARD

SCANNED_ROLES = frozenset({"user", "tool", "function"})


@dataclass
class InputVerdict:
    request: ChatRequest
    findings: list[str] = field(default_factory=list)
    redactions: int = 0
    refusal: LockgateError | None = None  # set when the policy blocks the request


def screen_input(req: ChatRequest, policy: Policy) -> InputVerdict:
    untrusted = set(req.lockgate.untrusted)
    for i in untrusted:
        if not 0 <= i < len(req.messages):
            raise InvalidRequest(f"lockgate.untrusted: {i} is not a message index", stage=GUARD)
    findings: list[str] = []
    if policy.injection != "allow":
        signals: set[str] = set()
        for i, m in enumerate(req.messages):
            if m.role in SCANNED_ROLES or i in untrusted:
                v = injection.score(m.text())
                if v.score >= policy.injection_threshold:
                    signals.update(v.signals)
        if signals:
            findings += [f"injection:{s}" for s in sorted(signals)]
            if policy.injection == "block":
                msg = f"the input looks like a prompt-injection attempt ({', '.join(sorted(signals))})"
                return InputVerdict(request=req, findings=findings, refusal=BlockedInput(msg, stage=GUARD))
    messages = list(req.messages)
    redactions = 0
    if policy.pii_input != "allow":
        counts: Counter[str] = Counter()
        for i, m in enumerate(messages):
            messages[i] = _redact_message(m, counts)
        if counts:
            findings += [f"pii_input:{k}" for k in sorted(counts)]
            if policy.pii_input == "block":
                msg = f"the input contains personal data or secrets ({', '.join(sorted(counts))})"
                return InputVerdict(request=req, findings=findings, refusal=BlockedInput(msg, stage=GUARD))
            redactions = sum(counts.values())
    for i in sorted(untrusted):
        messages[i] = _wrap(messages[i])
    if messages != req.messages:
        req = msgspec.structs.replace(req, messages=messages)
    return InputVerdict(request=req, findings=findings, redactions=redactions)


def _redact_message(m: Message, counts: Counter[str]) -> Message:
    if isinstance(m.content, str):
        text, c = pii.redact(m.content)
        if c:
            counts.update(c)
            return msgspec.structs.replace(m, content=text)
        return m
    if m.content:
        parts = []
        for p in m.content:
            if p.type == "text" and p.text:
                text, c = pii.redact(p.text)
                counts.update(c)
                parts.append(msgspec.structs.replace(p, text=text) if c else p)
            else:
                parts.append(p)
        return msgspec.structs.replace(m, content=parts) if parts != m.content else m
    return m


def _wrap(m: Message) -> Message:
    if isinstance(m.content, str) or m.content is None:
        return msgspec.structs.replace(m, content=injection.wrap_untrusted(m.content or ""))
    parts = [
        msgspec.structs.replace(p, text=injection.wrap_untrusted(p.text or "")) if p.type == "text" else p
        for p in m.content
    ]
    return msgspec.structs.replace(m, content=parts)


@dataclass
class OutputVerdict:
    content: str | None
    findings: list[str] = field(default_factory=list)
    redactions: int = 0
    refusal: LockgateError | None = None  # blocked_output: the findings say what tripped


async def screen_output(content: str | None, policy: Policy, moderators: list[Moderator]) -> OutputVerdict:
    """Blocklist and moderators (a refusal: ``blocked_output``), then PII redaction.

    A moderator that cannot judge raises (``stage_unavailable``, services/guard/moderation.py).
    """
    if not content:
        return OutputVerdict(content=content)
    if policy.blocklist and compiled(tuple(policy.blocklist)).hits(content):
        refusal = BlockedOutput("the answer contains blocked content (output blocklist)", stage=GUARD)
        return OutputVerdict(content=None, findings=["blocklist"], refusal=refusal)
    for mod in moderators:
        tripped = await mod.check(content)
        if tripped:
            msg = f"the answer was flagged by moderation ({', '.join(tripped[:5])})"
            findings = [f"moderation:{c}" for c in tripped]
            return OutputVerdict(content=None, findings=findings, refusal=BlockedOutput(msg, stage=GUARD))
    if policy.pii_output == "allow":
        return OutputVerdict(content=content)
    text, counts = pii.redact(content)
    return OutputVerdict(
        content=text, findings=[f"pii_output:{k}" for k in sorted(counts)], redactions=sum(counts.values())
    )
