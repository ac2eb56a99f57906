"""`lockgate chat`: one request over NATS, printed (streamed token by token with --stream)."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from shared.client import LockgateClient
from shared.errors import LockgateError
from shared.schemas.chat import ChatRequest, JsonSchemaSpec, LockgateInfo, Message, ResponseFormat


def build_request(
    prompt: str, *, model: str | None, stream: bool, json_schema: Path | None, max_tokens: int | None,
    temperature: float | None,
) -> ChatRequest:  # fmt: skip
    fmt = None
    if json_schema is not None:
        schema = msgspec.json.decode(json_schema.read_bytes())
        fmt = ResponseFormat(type="json_schema", json_schema=JsonSchemaSpec(name=json_schema.stem, schema_=schema))
    return ChatRequest(
        messages=[Message(role="user", content=prompt)],
        model=model,
        stream=stream,
        response_format=fmt,
        max_tokens=max_tokens,
        temperature=temperature,
    )


def _describe(info: LockgateInfo) -> str:
    latency = ", ".join(f"{k}={v:.1f}ms" for k, v in info.latency_ms.items())
    return (
        f"[lockgate] request={info.request_id} route={info.route} deployment={info.deployment or '-'} "
        f"cached={info.cached or 'no'} cost=${info.cost_usd:.6f} attempts={len(info.attempts)} "
        f"validation={info.validation or '-'} latency: {latency}"
    )


async def run(url: str, api_key: str, req: ChatRequest, *, verbose: bool, timeout_s: float) -> int:
    async with await LockgateClient.connect(url, api_key) as lg:
        try:
            if req.stream:
                stream = await lg.stream(req, timeout_s=timeout_s)
                async for chunk in stream:
                    for ch in chunk.choices:
                        sys.stdout.write(ch.delta.content or "")
                        sys.stdout.flush()
                sys.stdout.write("\n")
                if verbose and stream.done is not None:
                    print(_describe(stream.done.lockgate), file=sys.stderr)
            else:
                reply = await lg.chat(req, timeout_s=timeout_s)
                print(reply.choices[0].message.content or "")
                if verbose:
                    print(_describe(reply.lockgate), file=sys.stderr)
        except LockgateError as exc:
            print(f"error: {exc.type}: {exc.message}" + (f" (stage {exc.stage})" if exc.stage else ""), file=sys.stderr)
            return 1
    return 0
