"""structlog, JSON lines on stdout, bound to request id and tenant via contextvars.

Secrets never reach a log line: values of keys that look like credentials are
replaced before rendering.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import msgspec
import structlog

_SECRET_KEYS = frozenset({"authorization", "api_key", "apikey", "password", "token", "secret", "key"})
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in event:
        if k.lower() in _SECRET_KEYS:
            event[k] = "[redacted]"
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    return msgspec.json.encode(obj, enc_hook=str).decode()


def configure(level: str = "info", *, stream: TextIO | None = None, json: bool = True) -> None:
    """Configure structlog once per process."""
    renderer: Any = structlog.processors.JSONRenderer(serializer=_dumps) if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=True,
    )


def get(name: str) -> Any:
    return structlog.get_logger(name)
