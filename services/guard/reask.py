"""Re-asking the model when its JSON fails validation: the follow-up request and the merged result.

The guard drives it (it already holds the route plan, the deadline and the
executor subject): on ``invalid_output`` from the validator, for a non-streamed
request, it sends the conversation plus the model's answer and a user message
naming the validation error back through ``mesh.v1.executor.execute``, up to
the route's ``reask_max`` times, then validates again. Usage, cost and attempts
of every call are summed into one result, so budget settlement and the audit
record see all of them.
"""

from __future__ import annotations

import msgspec

from shared.schemas.chat import ChatRequest, Message, Usage, cached_details
from shared.schemas.mesh import ExecuteResult

MAX_ECHO = 8_000  # characters of the rejected answer sent back to the model
MAX_ERROR = 2_000  # characters of the validation error told to the model
NOTE_CHARS = 200  # the note's own words around the error
EXTRA_CHARS = MAX_ECHO + MAX_ERROR + NOTE_CHARS  # what one re-ask adds to the prompt, at most


def request(req: ChatRequest, rejected: str, error: str) -> ChatRequest:
    note = (
        f"Your previous reply was rejected: {error[:MAX_ERROR]}. Reply again with only the corrected JSON value "
        "(no prose, no code fences) so that it satisfies the required format."
    )
    messages = [
        *req.messages,
        Message(role="assistant", content=rejected[:MAX_ECHO]),
        Message(role="user", content=note),
    ]
    return msgspec.structs.replace(req, messages=messages)


def merge(first: ExecuteResult, again: ExecuteResult) -> ExecuteResult:
    u, v = first.usage, again.usage
    return msgspec.structs.replace(
        again,
        usage=Usage(
            prompt_tokens=u.prompt_tokens + v.prompt_tokens,
            completion_tokens=u.completion_tokens + v.completion_tokens,
            total_tokens=u.total_tokens + v.total_tokens,
            prompt_tokens_details=cached_details(u.cached_prompt_tokens + v.cached_prompt_tokens),
        ),
        cost_usd=first.cost_usd + again.cost_usd,
        attempts=[*first.attempts, *again.attempts],
    )
