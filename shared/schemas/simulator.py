"""Configuration for the built-in simulated LLM provider (``services.simulator``).

The simulator speaks the OpenAI Chat Completions and Anthropic Messages wire formats and can
inject faults.  A :class:`FaultConfig` describes the faults of one request; it is built by
merging, field by field (later wins), the selected profile (or ``SimulatorConfig.default``), the
``x-sim-fault`` request header and a ``[sim:...]`` directive in the last user message.
See ``docs/simulator.md`` for the grammar.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

OutputMode = Literal["auto", "bad-json", "schema-violation", "tool-call", "echo"]
"""How the simulator shapes the reply content (OpenAI only; Anthropic ignores it, except ``echo``).

``auto``: honour ``response_format`` (plain text, a JSON object, or a document valid for the schema).
``bad-json``: text that is not valid JSON.
``schema-violation``: valid JSON that does not satisfy the requested schema / format.
``tool-call``: when the request offers tools, a call of the first one (or the one ``tool_choice``
names) with arguments valid for its parameters schema, ``finish_reason`` ``tool_calls``; else ``auto``.
``echo``: the last user message's text, without its ``[sim:...]`` directive (OpenAI and Anthropic), so a
test can make the model say exactly what it needs (a word the moderation endpoint flags, say).
"""

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]


class FaultConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Faults applied to a request.  Every default means "no fault".

    Attributes:
        latency_ms: delay before the response starts (before the status line / first SSE byte).
        chunk_delay_ms: delay between two SSE events of a streamed reply.
        status: HTTP error status to answer with instead of a reply (``0`` = none), e.g. 429, 500,
            503, 529.  The body uses the provider's own error format.
        retry_after_s: when set, sent with the error status as ``Retry-After`` (whole seconds,
            rounded up) and ``retry-after-ms`` headers.
        error_rate: probability in ``[0, 1]`` that ``status`` is applied to a request.  The rule:
            ``0.0`` (the default) together with a non-zero ``status`` means *always* (so
            ``status=429`` alone always fails); any other value is the probability, drawn from the
            simulator's seeded random generator.  ``error_rate`` only gates ``status``.
        hang: accept the request and never answer until the client disconnects.
        malformed: answer 200 with a body that is not valid JSON (or a broken SSE event).
        output: shape of the reply content, see :data:`OutputMode`.
        status_mix: several error statuses, each with its own probability (``{429: 0.3, 503: 0.1}``:
            30 % 429s, 10 % 503s, 60 % no status fault; one draw per request). When set, it replaces
            ``status`` and ``error_rate``.
    """

    latency_ms: NonNegInt = 0
    chunk_delay_ms: NonNegInt = 0
    status: Annotated[int, msgspec.Meta(ge=0, le=599)] = 0
    retry_after_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    error_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    hang: bool = False
    malformed: bool = False
    output: OutputMode = "auto"
    status_mix: dict[Annotated[int, msgspec.Meta(ge=400, le=599)], Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]] = {}


class SimulatorConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Settings of one simulator server.

    Attributes:
        host: interface to bind.
        port: TCP port to bind; ``0`` picks a free port (read it back from ``SimulatorServer.url``).
        default: faults applied to requests that do not select a profile.
        profiles: named fault sets, selected with the URL prefix ``/p/{name}`` (e.g.
            ``/p/flaky/v1/chat/completions``).  A profile replaces ``default``, it is not merged with it.
        seed: seeds the reply text (together with the model and messages) and the random generator
            behind ``error_rate``.
        words_per_reply: number of pseudo-random words after the ``"Simulated reply:"`` prefix.
        models: model ids listed by ``GET /v1/models`` (any model name is accepted by the
            completion endpoints and echoed back).
    """

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    default: FaultConfig = FaultConfig()
    profiles: dict[str, FaultConfig] = {}
    seed: int = 0
    words_per_reply: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 12
    models: tuple[str, ...] = ("sim-gpt", "sim-claude")
