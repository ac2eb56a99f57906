"""What the guard refuses, and how: keys, malformed input, limits, access and models."""

from __future__ import annotations

import msgspec
import pytest

from shared import bus, errors
from shared.schemas.chat import ChatRequest, LockgateOptions, Message
from tests.conftest import Mesh
from tests.integration.test_mesh_basic import ask, error_of, raw_chat

GOOD = bus.encode(ask("Hello", model="gpt-4o-mini"))


def body(obj: object) -> bytes:
    return msgspec.json.encode(obj)


# -- keys ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("auth", "needle"),
    [
        pytest.param("Bearer lg-not-a-key", "invalid api key", id="wrong-key"),
        pytest.param(None, "missing api key", id="missing-header"),
        pytest.param("Basic dXNlcjpwYXNz", "malformed authorization", id="wrong-scheme"),
        pytest.param("Bearer   ", "malformed authorization", id="empty-token"),
        pytest.param("garbage", "malformed authorization", id="no-scheme"),
    ],
)
async def test_bad_key_is_unauthorized(mesh: Mesh, auth: str | None, needle: str) -> None:
    err = error_of(await raw_chat(mesh, GOOD, auth=auth), "unauthorized")
    assert needle in err.message.lower()
    assert err.stage == "guard"
    assert not err.retryable


async def test_client_with_wrong_key_gets_typed_error(mesh: Mesh) -> None:
    from shared.client import LockgateClient  # noqa: PLC0415

    other = LockgateClient(mesh.client.nc, "lg-wrong", names=mesh.names)
    with pytest.raises(errors.Unauthorized):
        await other.chat(ask("Hello"))
    with pytest.raises(errors.Unauthorized):
        await other.models()


# -- malformed input -------------------------------------------------------------------
BAD_INPUTS = [
    pytest.param(b"{not json", "not valid json", id="not-json"),
    pytest.param(b"", "not valid json", id="empty-body"),
    pytest.param(body({"messages": "hello"}), "$.messages", id="messages-string"),
    pytest.param(
        body({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
        "$.temperature",
        id="temperature-string",
    ),
    pytest.param(body({"messages": [{"role": "user", "content": 7}]}), "$.messages[0].content", id="content-int"),
    pytest.param(body({"model": "gpt-4o-mini"}), "messages", id="missing-messages"),
    pytest.param(body([1, 2, 3]), "expected `object`", id="json-array"),
    pytest.param(body({"messages": []}), "at least one message", id="empty-messages"),
    pytest.param(body({"messages": [{"role": "user", "content": ""}]}), "messages[0].content", id="empty-content"),
    pytest.param(body({"messages": [{"role": "user", "content": " \n\t "}]}), "whitespace", id="blank-content"),
    pytest.param(body({"messages": [{"role": "wizard", "content": "hi"}]}), "unknown role 'wizard'", id="unknown-role"),
    pytest.param(body({"messages": [{"role": "user", "content": "a\u0000b"}]}), "nul", id="nul-char"),
    pytest.param(body({"messages": [{"role": "user", "content": "a\u001bb"}]}), "U+001B", id="control-char"),
    pytest.param(b'{"messages": [{"role": "user", "content": "caf\xe9 \xff"}]}', "utf-8", id="invalid-utf8"),
    pytest.param(
        b'{"messages": [{"role": "user", "content": "hi"}], "tools": [{"a": ' + b"[" * 20_000 + b"]" * 20_000 + b"}]}",
        "nested too deeply",
        id="nesting-past-the-decoder",
    ),
    pytest.param(
        body(
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tool_choice": {"a": {"b": {"c": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}},
            }
        ),
        "tool_choice: nested 34 levels deep; the limit is 32",
        id="nesting-past-the-limit",
    ),
    pytest.param(
        body({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}), "temperature", id="temperature-range"
    ),
    pytest.param(body({"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}), "top_p", id="top-p-range"),
    pytest.param(
        body({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}), "max_tokens", id="max-tokens-zero"
    ),
    pytest.param(
        body({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**7}), "max_tokens", id="max-tokens-huge"
    ),
    pytest.param(
        body({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}),
        "$.response_format.type",
        id="response-format-type",
    ),
    pytest.param(
        body({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema"}}),
        "json_schema",
        id="json-schema-missing",
    ),
    pytest.param(
        body({"messages": [{"role": "user", "content": "hi"}], "lockgate": {"cache": "maybe"}}),
        "$.lockgate.cache",
        id="lockgate-cache-value",
    ),
    pytest.param(
        body({"messages": [{"role": "user", "content": "hi"}], "lockgate": {"max_latency_ms": 0}}),
        "max_latency_ms",
        id="max-latency-zero",
    ),
]


@pytest.mark.parametrize(("data", "needle"), BAD_INPUTS)
async def test_bad_input_gets_invalid_request_naming_the_problem(mesh: Mesh, data: bytes, needle: str) -> None:
    err = error_of(await raw_chat(mesh, data), "invalid_request")
    assert needle.lower() in err.message.lower()
    assert err.stage == "guard"
    assert err.retryable is False
    # ... and the guard still serves a good request afterwards.
    reply = await mesh.client.chat(ask("Still there?", model="gpt-4o-mini"))
    assert reply.choices[0].message.content


async def test_every_bad_input_in_a_row_then_a_good_request(mesh: Mesh) -> None:
    for p in BAD_INPUTS:
        data, _ = p.values
        msg = await raw_chat(mesh, data)
        assert error_of(msg, "invalid_request")
    reply = await mesh.client.chat(ask("Still there?", model="gpt-4o-mini"))
    assert reply.choices[0].message.content


async def test_too_many_messages(mesh: Mesh) -> None:
    n = mesh.config.limits.max_messages + 1
    req = ChatRequest(messages=[Message(role="user", content="hi")] * n)
    err = error_of(await raw_chat(mesh, bus.encode(req)), "invalid_request")
    assert f"{n} messages" in err.message


async def test_payload_over_the_size_limit_is_refused(mesh: Mesh) -> None:
    limit = mesh.config.limits.max_request_bytes
    assert limit == 1_048_576
    big = bus.encode(ask("x" * (limit + 10), model="gpt-4o-mini"))
    assert len(big) > limit
    err = error_of(await raw_chat(mesh, big), "invalid_request")
    assert f"{len(big)} bytes" in err.message
    assert str(limit) in err.message
    # Just under the size limit but over the per-message character limit: a different message.
    chars = mesh.config.limits.max_message_chars + 1
    err = error_of(await raw_chat(mesh, bus.encode(ask("y" * chars))), "invalid_request")
    assert "messages[0].content" in err.message
    assert str(chars) in err.message
    reply = await mesh.client.chat(ask("Still there?", model="gpt-4o-mini"))
    assert reply.choices[0].message.content


async def test_unknown_model_is_an_invalid_request_naming_it(mesh: Mesh) -> None:
    msg = await raw_chat(mesh, bus.encode(ask("Hi", model="gpt-17-ultra")))
    err = error_of(msg, "invalid_request")
    assert "gpt-17-ultra" in err.message
    assert err.stage == "router"
    assert msg.headers["Nats-Service-Error-Code"] == "404"
    with pytest.raises(errors.NotFound):
        await mesh.client.chat(ask("Hi", model="gpt-17-ultra"))


async def test_unknown_route_is_an_invalid_request_naming_it(mesh: Mesh) -> None:
    with pytest.raises(errors.InvalidRequest, match="nowhere"):
        await mesh.client.chat(ChatRequest(messages=[Message(role="user", content="Hi")],
                                           lockgate=LockgateOptions(route="nowhere")))  # fmt: skip


# -- access ----------------------------------------------------------------------------
async def test_key_limited_to_a_route(mesh: Mesh) -> None:
    """A key's ``routes`` names what it may ask for: route names (or model names) literally."""
    key = await mesh.add_key("dev", ["cheap"])
    msg = await raw_chat(mesh, bus.encode(ask("Hi", model="claude-3-5-haiku")), auth=f"Bearer {key}")
    err = error_of(msg, "forbidden")
    assert "claude-3-5-haiku" in err.message
    assert msg.headers["Nats-Service-Error-Code"] == "403"
    # The route by name (in `model` or in lockgate.route) is allowed ...
    ok = await raw_chat(mesh, bus.encode(ask("Hi", model="cheap")), auth=f"Bearer {key}")
    assert b'"chat.completion"' in ok.data, ok.data
    routed = ChatRequest(messages=[Message(role="user", content="Hi")], lockgate=LockgateOptions(route="cheap"))
    ok = await raw_chat(mesh, bus.encode(routed), auth=f"Bearer {key}")
    assert b'"chat.completion"' in ok.data, ok.data
    # ... and so is a model of that route when the request names the route too.
    both = ChatRequest(
        model="gpt-4o-mini", messages=[Message(role="user", content="Hi")], lockgate=LockgateOptions(route="cheap")
    )
    ok = await raw_chat(mesh, bus.encode(both), auth=f"Bearer {key}")
    assert b'"chat.completion"' in ok.data, ok.data
    # The default route (no model) is not among the key's routes.
    error_of(await raw_chat(mesh, bus.encode(ask("Hi")), auth=f"Bearer {key}"), "forbidden")
    # A model by its own name is not on the key's list either.
    error_of(await raw_chat(mesh, bus.encode(ask("Hi", model="gpt-4o-mini")), auth=f"Bearer {key}"), "forbidden")


async def test_route_label_cannot_smuggle_another_model(mesh: Mesh) -> None:
    """Naming an allowed route must not unlock a model outside it."""
    key = await mesh.add_key("dev", ["cheap"])
    req = ChatRequest(
        model="claude-3-5-haiku", messages=[Message(role="user", content="Hi")], lockgate=LockgateOptions(route="cheap")
    )
    msg = await raw_chat(mesh, bus.encode(req), auth=f"Bearer {key}")
    err = error_of(msg, "invalid_request")
    assert "claude-3-5-haiku" in err.message
    assert "cheap" in err.message


async def test_key_limited_to_a_model(mesh: Mesh) -> None:
    key = await mesh.add_key("dev", ["claude-3-5-haiku"])
    ok = await raw_chat(mesh, bus.encode(ask("Hi", model="claude-3-5-haiku")), auth=f"Bearer {key}")
    assert b'"chat.completion"' in ok.data, ok.data
    error_of(await raw_chat(mesh, bus.encode(ask("Hi", model="gpt-4o-mini")), auth=f"Bearer {key}"), "forbidden")


# -- llm.v1.models -----------------------------------------------------------------------
async def test_models_lists_everything_for_a_wildcard_key(mesh: Mesh) -> None:
    listed = await mesh.client.models()
    ids = [m.id for m in listed.data]
    assert listed.object == "list"
    assert set(ids) == set(mesh.config.models) | set(mesh.config.routes)
    assert len(ids) == len(set(ids))


async def test_models_lists_only_what_a_limited_key_may_use(mesh: Mesh) -> None:
    from shared.client import LockgateClient  # noqa: PLC0415

    key = await mesh.add_key("dev", ["cheap", "claude-3-5-haiku"])
    limited = LockgateClient(mesh.client.nc, key, names=mesh.names)
    ids = {m.id for m in (await limited.models()).data}
    assert ids == {"cheap", "claude-3-5-haiku"}


# -- nothing a client sends crashes a stage ------------------------------------------------
@pytest.mark.parametrize(
    ("stage", "op"),
    [
        ("router", "route"),
        ("budgeter", "reserve"),
        ("cache", "lookup"),
        ("executor", "execute"),
        ("validator", "validate"),
    ],
)
async def test_internal_endpoints_answer_garbage_with_the_envelope(mesh: Mesh, stage: str, op: str) -> None:
    subject = mesh.names.mesh(stage, op)
    garbage = [b"", b"{not json", b"[]", b"\xff" * 100]
    if stage != "router":  # every RouteRequest field is optional: {} is a valid request for the default route
        garbage.append(b'{"unexpected": true}')
    for data in garbage:
        msg = await mesh.nc.request(subject, data, timeout=5, headers={"Lockgate-Deadline": "garbage"})
        err = error_of(msg, "invalid_request")
        assert err.stage == stage
    reply = await mesh.client.chat(ask("Still there?", model="gpt-4o-mini"))
    assert reply.choices[0].message.content


async def test_models_with_a_bad_key_is_unauthorized(mesh: Mesh) -> None:
    msg = await mesh.nc.request(mesh.names.models, b"", timeout=5, headers={"Authorization": "Bearer nope"})
    err = error_of(msg, "unauthorized")
    assert err.stage == "router"
