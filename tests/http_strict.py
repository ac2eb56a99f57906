"""Strict checks of HTTP-door payloads against the official SDKs' own typed models.

``model_validate(..., strict=True)`` rejects a missing required field or a wrong
type; the SDK models tolerate extra keys, so ``no_extra`` walks the parsed model
and fails on any key the SDK does not know (only ``lockgate`` is ours to add).
"""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic

M = TypeVar("M", bound=pydantic.BaseModel)


def no_extra(obj: Any, path: str = "$", allowed: frozenset[str] = frozenset({"lockgate"})) -> None:
    if isinstance(obj, pydantic.BaseModel):
        extra = set(obj.model_extra or {}) - (allowed if path == "$" else frozenset())
        assert not extra, f"fields the SDK does not know at {path}: {sorted(extra)}"
        for name in type(obj).model_fields:
            no_extra(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            no_extra(item, f"{path}[{i}]")


def strict(model: type[M], data: dict[str, Any]) -> M:
    obj = model.model_validate(data, strict=True)
    no_extra(obj)
    return obj
