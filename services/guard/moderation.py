"""Output moderation: a configured blocklist, and a provider's moderation endpoint.

A :class:`Moderator` looks at the answer text and returns the categories it trips
(empty: fine). The guard runs the blocklist (from ``[security] blocklist``, per
route; shared/blocklist.py, which the executor also runs on streams), then the
route's provider moderation (``[security] moderation = "<provider>"``: a
:class:`ProviderModerator` calling that provider's OpenAI ``/v1/moderations``
through the official SDK), then any code hooks in ``Guard.moderators``; anything
tripped is ``blocked_output`` naming the categories (never the text).

Failing closed: when moderation was required and the endpoint fails (an HTTP
error, unreachable, a malformed answer, no answer within
``moderation_timeout_ms``, the provider not enabled or its key not set), the
answer is refused with ``stage_unavailable`` naming the moderation provider. Not
``blocked_output``: the answer was not judged bad, it was not judged at all, and
trying again later may well succeed (``stage_unavailable`` is retryable,
``blocked_output`` is not). A gateway that promised moderation never passes an
unmoderated answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

import openai

from shared import config as cfgmod
from shared import sdk
from shared.config import LockgateConfig
from shared.errors import StageUnavailable
from shared.security import Policy
from shared.subjects import GUARD


class Moderator(Protocol):
    async def check(self, text: str) -> list[str]:
        """The categories the text trips (e.g. ``["harassment"]``); empty when it passes."""
        ...


class ProviderModerator:
    """One provider's moderation endpoint (``POST /v1/moderations``) as a :class:`Moderator`."""

    def __init__(self, pool: ModerationClients, provider: str, model: str, timeout_s: float) -> None:
        self.pool = pool
        self.provider = provider
        self.model = model
        self.timeout_s = timeout_s

    def _unavailable(self, why: str) -> StageUnavailable:
        return StageUnavailable(
            f"output moderation (provider {self.provider}) {why}; the answer was not delivered", stage=GUARD
        )

    async def check(self, text: str) -> list[str]:
        client = self.pool.client(self.provider)
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await client.moderations.create(model=self.model, input=text, timeout=self.timeout_s)
        except (TimeoutError, openai.APITimeoutError):
            raise self._unavailable(f"did not answer within {round(self.timeout_s * 1000)} ms") from None
        except openai.APIStatusError as exc:
            raise self._unavailable(f"answered HTTP {exc.status_code}") from None
        except openai.APIConnectionError:
            raise self._unavailable("is unreachable") from None
        except Exception as exc:  # the SDK could not read the answer
            raise self._unavailable(f"sent a malformed answer ({type(exc).__name__})") from None
        if not resp.results:
            raise self._unavailable("sent no result")
        tripped: set[str] = set()
        for result in resp.results:
            flags = result.categories.model_dump(by_alias=True)
            named = {name for name, on in flags.items() if on is True}
            if result.flagged and not named:
                named = {"flagged"}  # flagged without a category the SDK knows: still blocked
            tripped |= named
        return sorted(tripped)


class ModerationClients:
    """One pooled OpenAI SDK client per moderation provider; the route's policy picks the moderators."""

    def __init__(self, config: LockgateConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = env
        self._clients: dict[str, openai.AsyncOpenAI] = {}

    def moderators(self, policy: Policy) -> list[Moderator]:
        if policy.moderation == "off":
            return []
        timeout_s = policy.moderation_timeout_ms / 1000.0
        return [ProviderModerator(self, policy.moderation, policy.moderation_model, timeout_s)]

    def client(self, provider: str) -> openai.AsyncOpenAI:
        client = self._clients.get(provider)
        if client is not None:
            return client
        prov = self.config.providers[provider]  # config.py checked it exists and is of kind "openai"
        if not cfgmod.provider_enabled(self.config, provider, self.env):
            why = "is simulated but simulation is off" if prov.simulated else f"needs {prov.api_key_env}, not set"
            raise StageUnavailable(
                f"output moderation (provider {provider}) {why}; the answer was not delivered", stage=GUARD
            )
        key = sdk.api_key(prov.api_key_env, self.env)  # as the executor does for chat
        if key is None:
            raise StageUnavailable(
                f"output moderation (provider {provider}) needs {prov.api_key_env}, not set; "
                "the answer was not delivered",
                stage=GUARD,
            )
        client = self._clients[provider] = sdk.openai_client(prov.base_url, key)
        return client

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for c in clients.values():
            await c.close()
