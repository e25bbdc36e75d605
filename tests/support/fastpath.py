"""The differential check of the fast path (`schemas.omh_fast.parse_json`)
against the reference path (`orjson.loads`, then `schemas.omh.parse_data_point`
per data point): for the same bytes, the fast path either defers (None) or
gives exactly the reference's results, floats to the bit and date-times with
their offsets."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec
import orjson

from schemas import Reading, Refusal, parse_data_point
from schemas.omh_fast import parse_json


def exact(results: list[Reading | Refusal]) -> list[tuple[str, str]]:
    """Results in a form where 0.0 != -0.0 and 1 != 1.0 and offsets count."""
    return [
        (type(r).__name__, repr(msgspec.to_builtins(r, builtin_types=(datetime,)))) for r in results
    ]


def reference(raw: bytes, now: datetime) -> list[Reading | Refusal] | None:
    """What the gate answered before the fast path; None for a payload it
    refuses as a whole (not JSON, or not a data point or an array of them)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        return [parse_data_point(obj, now=now)]
    if isinstance(obj, list):
        return [parse_data_point(item, now=now) for item in obj]
    return None


def encode(obj: object) -> bytes | None:
    """What a sender would have sent for `obj`, if it is JSON-like at all (big
    integers, NaN and lone surrogates included: they make bytes to test too)."""
    try:
        text = json.dumps(obj, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None
    return text.encode("utf-8", "surrogatepass")


def check(raw: bytes, now: datetime) -> bool:
    """Assert that the fast path agrees with the reference on `raw`; True
    when it answered itself (False: it deferred)."""
    fast = parse_json(raw, now=now)
    if fast is None:
        return False
    ref = reference(raw, now)
    assert ref is not None, f"fast path accepted what the reference refuses as a whole: {raw!r}"
    assert exact(fast) == exact(ref), raw
    return True


def check_object(obj: Any, now: datetime) -> bool:
    """`check` on the JSON of `obj` (and of a one-element array of it)."""
    raw = encode(obj)
    if raw is None:
        return False
    check(b"[" + raw + b"]", now)
    return check(raw, now)
