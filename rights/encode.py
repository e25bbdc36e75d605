"""How rights documents become JSON: UTC times with `Z`, UUIDs as strings,
bytes left out (encrypted secrets are never part of an extract)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

_JSON_OPTS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def _default(obj: Any) -> Any:
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, memoryview | bytes):
        return None
    raise TypeError(type(obj).__name__)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=_JSON_OPTS)


def plain(obj: Any) -> Any:
    """`obj` as JSON would carry it (strings for times and ids), in Python."""
    return orjson.loads(dumps(obj))
