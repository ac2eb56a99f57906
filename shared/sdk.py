"""The official provider SDK clients, built one way for every service that calls a provider.

The SDKs' own retries are off (``max_retries=0``): the executor retries chat
calls under its own policy, and the guard's moderation call fails closed rather
than retrying. A provider without ``api_key_env`` (simulated, or a local server
that needs no key) gets a placeholder key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import anthropic
import openai

SIMULATED_KEY = "sk-lockgate-simulated"


def api_key(api_key_env: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The key a provider's client sends; None when its environment variable is unset or empty."""
    if api_key_env is None:
        return SIMULATED_KEY
    return (os.environ if env is None else env).get(api_key_env) or None


def openai_client(base_url: str | None, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0)


def anthropic_client(base_url: str | None, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=key, base_url=base_url, max_retries=0)
