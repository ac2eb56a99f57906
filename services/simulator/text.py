"""Deterministic reply text, token estimates and JSON generation from a JSON schema.

Everything here is a pure function of its inputs: the reply for a request is derived from a
BLAKE2b digest of ``(seed, model, messages)``, each digest byte picking one of 256 words.

Token estimate (documented in ``docs/simulator.md``):

* prompt tokens = sum over messages (and the Anthropic ``system`` prompt) of
  ``ceil(chars / 4) + 3`` where ``chars`` is the length of the message's text content;
* completion tokens = number of space-separated pieces of the reply content
  (``content.count(" ") + 1``), i.e. the number of words for a plain-text reply.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import msgspec

_WORD_TEXT = """
    amber anchor apple arrow atlas autumn badge bamboo banner barrel basin beacon berry birch blossom
    bonfire border breeze bridge bright brook bubble cabin cactus camera candle canyon canvas carbon
    castle cedar chalk cherry cider cinder circle citrus cliff clock cloud clover cobalt comet copper
    coral cotton crane crater crystal dawn delta desert dial dolphin dome dragon drift dune eagle echo
    ember engine falcon feather fern ferry fiber field flame flint forest fossil fountain fox frost
    galaxy garden garnet glacier glade globe granite grape gravel harbor harvest hazel helmet heron
    hollow honey horizon island ivory jade jasmine jungle kernel kettle kite lagoon lantern lava leaf
    lemon lilac linen lotus lunar magnet maple marble meadow mesa meteor mint mirror moss mountain
    nectar needle nickel noble nova oasis ocean olive onyx orbit orchid otter paddle palm panda paper
    pebble pepper pillar pine planet plaza plum polar pond poppy prairie prism pulse quartz quill rabbit
    radar rain raven reef ribbon ridge river robin rocket saddle saffron sage salmon sand sapphire satin
    shadow shell signal silver slate sonar spark spice spiral spruce spring stone storm stream summit
    sunset swan tango temple thistle thunder tide timber topaz torch tower trail tulip tundra valley
    velvet vessel violet vista walnut willow window winter wolf zenith zephyr acorn alpine aspen aurora
    basil beetle blaze bolt branch cairn cobble cosmos cricket dahlia daisy fable fjord gazelle geyser
    ginger gull haven iris juniper kayak koala lichen llama lynx mango marsh melon merlin mocha nutmeg
    opal osprey parrot peach pecan quail quiver raisin rowan sepia sierra sparrow sprout
"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())
"""256 distinct words: one digest byte selects one word."""

PREFIX: tuple[str, ...] = ("Simulated", "reply:")
"""Every plain-text reply starts with these words, so simulated output is easy to recognise."""

BAD_JSON_PREFIX = 'Sure! Here is the JSON you asked for: {"answer": "'


def request_digest(seed: int, model: str, messages: bytes) -> bytes:
    """64-byte digest identifying a request: ``messages`` is the canonical JSON of the messages."""
    h = hashlib.blake2b(digest_size=64)
    h.update(str(seed).encode())
    h.update(b"\x00")
    h.update(model.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(messages)
    return h.digest()


def word_stream(digest: bytes) -> Iterator[str]:
    """An endless, deterministic stream of words derived from ``digest``."""
    block = digest
    while True:
        for b in block:
            yield WORDS[b]
        block = hashlib.blake2b(block, digest_size=64).digest()


def reply_text(digest: bytes, count: int) -> str:
    """``"Simulated reply: "`` followed by ``count`` pseudo-random words."""
    return " ".join((*PREFIX, *islice(word_stream(digest), count)))


_DIRECTIVE = re.compile(r"\[sim:[^\]]*\]")


def echo_text(last_user: str | None) -> str:
    """Output ``echo``: the last user message's text without its ``[sim:...]`` directive(s), trimmed."""
    return _DIRECTIVE.sub("", last_user or "").strip()


def json_object_text(digest: bytes, count: int) -> str:
    """A JSON object string ``{"answer": "<reply text>"}``."""
    return msgspec.json.encode({"answer": reply_text(digest, count)}).decode()


def bad_json_text(digest: bytes, count: int) -> str:
    """Text that looks like an attempt at JSON but does not parse."""
    return BAD_JSON_PREFIX + reply_text(digest, count)


def prompt_tokens(message_chars: Iterable[int]) -> int:
    """Prompt token estimate from the text length of each message: ``sum(ceil(c / 4) + 3)``."""
    return sum((c + 3) // 4 + 3 for c in message_chars)


def completion_tokens(content: str) -> int:
    """Completion token estimate: the number of space-separated pieces of ``content``."""
    return content.count(" ") + 1


def truncate(content: str, max_tokens: int | None) -> tuple[str, bool]:
    """Cut ``content`` to at most ``max_tokens`` pieces; returns ``(content, was_cut)``."""
    if max_tokens is None or content.count(" ") < max_tokens:
        return content, False
    return " ".join(content.split(" ", max_tokens)[:max_tokens]), True


def stream_pieces(content: str) -> list[str]:
    """Split ``content`` into one piece per token; the pieces concatenate back to ``content``."""
    first, *rest = content.split(" ")
    return [first, *(" " + piece for piece in rest)]


# --------------------------------------------------------------------------- JSON schema

_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "sim@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/sim",
    "url": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_MAX_DEPTH = 24
_BUDGET = 20_000  # schema nodes visited per document; beyond it the schema is rejected
_MAX_STRING = 100_000
_SHALLOW = 4  # below this depth optional properties are filled and arrays get one item
_TYPE_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("object", ("properties", "required", "additionalProperties", "minProperties")),
    ("array", ("items", "prefixItems", "minItems", "maxItems")),
    ("number", ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")),
    ("string", ("minLength", "maxLength", "pattern", "format")),
)


def _merge(base: dict[str, Any], extra: Any) -> dict[str, Any]:
    """Shallow merge of two schemas (``properties`` merged, ``required`` unioned)."""
    if not isinstance(extra, dict):
        return base
    out = {**base, **extra}
    if isinstance(base.get("properties"), dict) and isinstance(extra.get("properties"), dict):
        out["properties"] = {**base["properties"], **extra["properties"]}
    if isinstance(base.get("required"), list) and isinstance(extra.get("required"), list):
        out["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
    return out


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class _Generator:
    """Builds a JSON value valid for a schema; strings take words from the request digest."""

    def __init__(self, root: Any, digest: bytes) -> None:
        self._root = root
        self._words = word_stream(digest)
        self._n = 0
        self._budget = _BUDGET

    def _spend(self) -> None:
        self._budget -= 1
        if self._budget < 0:
            raise ValueError("JSON schema too large or too deeply nested to generate an instance")

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return None
        node: Any = self._root
        for raw in ref[1:].split("/"):
            if not raw:
                continue
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def deref(self, schema: Any) -> dict[str, Any]:
        """``schema`` with its ``$ref`` chain followed (sibling keywords kept)."""
        s: dict[str, Any] = schema if isinstance(schema, dict) else {}
        for _ in range(_MAX_DEPTH):
            ref = s.get("$ref")
            if not isinstance(ref, str):
                break
            rest = {k: v for k, v in s.items() if k != "$ref"}
            target = self._resolve(ref)
            s = _merge(target, rest) if isinstance(target, dict) else rest
        return s

    def normalise(self, schema: Any, depth: int = 0) -> dict[str, Any]:
        """Follow ``$ref`` and fold ``allOf`` and the first ``anyOf``/``oneOf`` branch into one schema."""
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return {}
        self._spend()
        s: dict[str, Any] = schema
        for _ in range(_MAX_DEPTH):
            ref = s.get("$ref")
            if isinstance(ref, str):
                rest = {k: v for k, v in s.items() if k != "$ref"}
                target = self._resolve(ref)
                s = _merge(target, rest) if isinstance(target, dict) else rest
                continue
            all_of = s.get("allOf")
            if isinstance(all_of, list):
                merged = {k: v for k, v in s.items() if k != "allOf"}
                for sub in all_of:
                    merged = _merge(merged, self.normalise(sub, depth + 1))
                s = merged
                continue
            for key in ("anyOf", "oneOf"):
                branches = s.get(key)
                if isinstance(branches, list):
                    base = {k: v for k, v in s.items() if k != key}
                    s = _merge(base, self.normalise(branches[0], depth + 1)) if branches else base
                    break
            else:
                return s
        return s

    def value(self, schema: Any, depth: int = 0, index: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            return None
        self._spend()
        s = self.normalise(schema)
        if "const" in s:
            return s["const"]
        enum = s.get("enum")
        if isinstance(enum, list) and enum:
            return enum[index % len(enum)]
        kind = self._type(s)
        if kind == "object":
            return self._object(s, depth)
        if kind == "array":
            return self._array(s, depth)
        if kind in ("integer", "number"):
            return self._number(s, integer=kind == "integer")
        if kind == "boolean":
            return index % 2 == 0
        if kind == "null":
            return None
        return self._string(s)

    @staticmethod
    def _type(s: dict[str, Any]) -> str:
        t = s.get("type")
        if isinstance(t, list):
            names = [x for x in t if isinstance(x, str)]
            non_null = [x for x in names if x != "null"]
            t = non_null[0] if non_null else (names[0] if names else None)
        if isinstance(t, str):
            return t
        for kind, keys in _TYPE_HINTS:
            if any(k in s for k in keys):
                return kind
        return "string"

    def _object(self, s: dict[str, Any], depth: int) -> dict[str, Any]:
        props = s.get("properties")
        props = props if isinstance(props, dict) else {}
        required = s.get("required")
        required = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
        extra = s.get("additionalProperties")
        extra_schema = extra if isinstance(extra, dict) else {}
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if depth < _SHALLOW or name in required:
                out[name] = self.value(sub, depth + 1)
        for name in required:
            if name not in out:
                out[name] = self.value(extra_schema, depth + 1)
        min_props = s.get("minProperties")
        if isinstance(min_props, int) and extra is not False:
            while len(out) < min_props:
                out[f"field_{len(out)}"] = self.value(extra_schema, depth + 1)
        return out

    def _array(self, s: dict[str, Any], depth: int) -> list[Any]:
        items, prefix = s.get("items"), s.get("prefixItems")
        tuple_items = prefix if isinstance(prefix, list) else items if isinstance(items, list) else []
        min_items = s.get("minItems")
        count = max(min_items if isinstance(min_items, int) else 0, 1 if depth < _SHALLOW else 0)
        max_items = s.get("maxItems")
        if isinstance(max_items, int):
            count = min(count, max_items)
        out: list[Any] = []
        for i in range(count):
            sub = tuple_items[i] if i < len(tuple_items) else items if isinstance(items, dict) else {}
            out.append(self.value(sub, depth + 1, index=i))
        return out

    def _number(self, s: dict[str, Any], *, integer: bool) -> int | float:
        self._n += 1
        lo, hi = _num(s.get("minimum")), _num(s.get("maximum"))
        ex_lo, ex_hi = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
        ex_lo_n, ex_hi_n = _num(ex_lo), _num(ex_hi)
        lo_open = hi_open = False
        if ex_lo_n is not None and (lo is None or ex_lo_n >= lo):
            lo, lo_open = ex_lo_n, True
        elif ex_lo is True:  # draft-4 boolean form
            lo_open = lo is not None
        if ex_hi_n is not None and (hi is None or ex_hi_n <= hi):
            hi, hi_open = ex_hi_n, True
        elif ex_hi is True:
            hi_open = hi is not None

        def too_low(x: float) -> bool:
            return lo is not None and (x < lo or (lo_open and x <= lo))

        def too_high(x: float) -> bool:
            return hi is not None and (x > hi or (hi_open and x >= hi))

        v = float(self._n * 7 % 97 + 1) + (0.0 if integer else 0.5)
        if too_low(v) and lo is not None:
            v = math.floor(lo) + 1 if lo_open else lo
        if too_high(v) and hi is not None:
            v = math.ceil(hi) - 1 if hi_open else hi
            if too_low(v) and lo is not None:
                v = (lo + hi) / 2
        step = _num(s.get("multipleOf"))
        if step is not None and step > 0:
            k = math.ceil(v / step)
            v = k * step
            if too_high(v):
                v = (k - 1) * step
        if integer:
            return math.ceil(v) if too_low(math.floor(v)) else math.floor(v)
        return int(v) if step is not None and step.is_integer() else v

    def _string(self, s: dict[str, Any]) -> str:
        fmt = s.get("format")
        text = _FORMATS.get(fmt) if isinstance(fmt, str) else None
        if text is None:
            text = f"{next(self._words)} {next(self._words)}"
        min_len, max_len = s.get("minLength"), s.get("maxLength")
        if isinstance(min_len, int) and len(text) < min_len:
            if min_len > _MAX_STRING:
                raise ValueError(f"minLength {min_len} is larger than the simulator generates")
            text += "x" * (min_len - len(text))
        if isinstance(max_len, int) and len(text) > max_len:
            text = text[: max(max_len, 0)]
        return text


def schema_instance(schema: Any, digest: bytes) -> Any:
    """A JSON value that validates against ``schema`` (best effort: ``pattern``, ``not``,
    ``uniqueItems`` over enums and conflicting constraints are not solved).  Raises ``ValueError``
    for schemas too large to instantiate (over 20k nodes, ``minLength`` over 100k)."""
    return _Generator(schema, digest).value(schema)


_JSON_TYPES: tuple[tuple[str, Any], ...] = (
    ("string", "schema-violation"),
    ("integer", 12345),
    ("boolean", True),
    ("null", None),
    ("array", ["schema-violation"]),
    ("object", {"schema_violation": True}),
)


def _type_set(s: dict[str, Any]) -> set[str]:
    t = s.get("type")
    if isinstance(t, str):
        return {t}
    return {x for x in t if isinstance(x, str)} if isinstance(t, list) else set()


def _wrong_value(gen: _Generator, schema: Any) -> tuple[bool, Any]:
    """A value that ``schema`` rejects, if one is easy to find: ``(found, value)``.

    Every ``anyOf``/``oneOf`` branch is considered, so the value is rejected by all of them."""
    raw = gen.deref(schema)
    branches = next((raw[k] for k in ("anyOf", "oneOf") if isinstance(raw.get(k), list)), None)
    if branches:
        allowed: set[str] = set()
        for branch in branches:
            types = _type_set(gen.normalise(branch))
            if not types:
                return False, None
            allowed |= types
    else:
        s = gen.normalise(raw)
        if "const" in s:
            return True, ["not-the-const", s["const"]]
        if isinstance(s.get("enum"), list):
            return True, {"not_in_enum": [1.5]}
        allowed = _type_set(s)
    if not allowed:
        return False, None
    for name, candidate in _JSON_TYPES:
        if name not in allowed and not (name == "integer" and "number" in allowed):
            return True, candidate
    return False, None


def schema_violation(schema: Any, digest: bytes) -> Any:
    """Valid JSON that does NOT validate against ``schema``: drops the first required property,
    else gives a property a wrong type, else answers with a value of the wrong type.  A schema
    that accepts any value (``{}``) cannot be violated; its valid instance is returned then."""
    gen = _Generator(schema, digest)
    root = gen.normalise(schema)
    doc = gen.value(root)
    if isinstance(doc, dict):
        required = root.get("required")
        if isinstance(required, list) and required and required[0] in doc:
            del doc[required[0]]
            return doc
        props = root.get("properties")
        if isinstance(props, dict):
            for name, sub in props.items():
                found, wrong = _wrong_value(gen, sub)
                if found:
                    doc[name] = wrong
                    return doc
        if root.get("additionalProperties") is False:
            doc["schema_violation"] = True
            return doc
    found, wrong = _wrong_value(gen, schema)
    return wrong if found else doc
