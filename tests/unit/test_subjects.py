"""Subject, stream and bucket names, with and without a namespace."""

from __future__ import annotations

import pytest

from shared.subjects import ANONYMOUS, STAGES, Names, token


def test_no_namespace_gives_the_documented_names() -> None:
    n = Names()
    assert n.chat == "llm.v1.chat"
    assert n.models == "llm.v1.models"
    assert n.public_prefix == "llm.v1"
    assert n.mesh("budgeter", "reserve") == "mesh.v1.budgeter.reserve"
    assert n.mesh_group("cache") == "mesh.v1.cache"
    assert n.event("completion", "acme") == "events.v1.completion.acme"
    assert n.events_of("usage") == "events.v1.usage.*"
    assert n.events_all == "events.v1.>"
    assert n.audit("acme", "refused") == "audit.v1.acme.refused"
    assert n.audit_of() == "audit.v1.>"
    assert n.audit_of("acme") == "audit.v1.acme.>"
    assert (n.events_stream, n.audit_stream) == ("EVENTS", "AUDIT")
    assert (n.keys_bucket, n.budgets_bucket) == ("LOCKGATE_KEYS", "LOCKGATE_BUDGETS")
    assert n.consumer("auditor", "audit") == "auditor-audit"


def test_namespace_prefixes_every_subject_stream_and_bucket() -> None:
    n = Names("t42")
    assert n.chat == "t42.llm.v1.chat"
    assert n.models == "t42.llm.v1.models"
    assert n.mesh("executor", "execute") == "t42.mesh.v1.executor.execute"
    assert n.event("completion", "dev") == "t42.events.v1.completion.dev"
    assert n.events_all == "t42.events.v1.>"
    assert n.audit("dev", "cached") == "t42.audit.v1.dev.cached"
    assert n.audit_of() == "t42.audit.v1.>"
    assert n.events_stream == "T42_EVENTS"
    assert n.audit_stream == "T42_AUDIT"
    assert n.keys_bucket == "T42_LOCKGATE_KEYS"
    assert n.budgets_bucket == "T42_LOCKGATE_BUDGETS"


def test_two_namespaces_never_share_a_name() -> None:
    a, b = Names("a"), Names("b")
    for attr in ("chat", "models", "events_all", "events_stream", "audit_stream", "keys_bucket", "budgets_bucket"):
        assert getattr(a, attr) != getattr(b, attr)


@pytest.mark.parametrize(
    ("tenant", "expected"),
    [
        ("acme", "acme"),
        ("", ANONYMOUS),
        ("a.b", "a_b"),
        ("x*y>z", "x_y_z"),
        ("sp ace", "sp_ace"),
        ("t" * 100, "t" * 64),
    ],
)
def test_tenant_becomes_exactly_one_safe_token(tenant: str, expected: str) -> None:
    assert token(tenant) == expected
    subject = Names("ns").audit(tenant, "refused")
    assert subject == f"ns.audit.v1.{expected}.refused"
    assert subject.count(".") == 4
    assert Names().event("completion", tenant) == f"events.v1.completion.{expected}"


def test_stages_are_the_seven_services() -> None:
    assert STAGES == ("guard", "router", "budgeter", "cache", "executor", "validator", "auditor")
