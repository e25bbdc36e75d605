"""A payload → parsed readings and refusals, one per data point, in order.

Stateless checks only (schema, units, plausibility, future time); the consent
decision that counts is made inside the writer's transaction. A payload is
Open mHealth (one data point or an array of them) or FHIR R4 (an Observation
or a Bundle of them); the raw bytes of one are decoded here too.

Raw Open mHealth bytes take the fast path first (`schemas.omh_fast`: msgspec
decodes and type-checks them in one pass); whatever it is not sure about, it
leaves to the reference path (orjson, then `parse_data_point`), so both give
the same answers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import orjson

from schemas.fhir import count_items, parse_fhir
from schemas.omh import parse_data_point
from schemas.omh_fast import parse_json
from schemas.reading import Reading, Refusal

Format = Literal["omh", "fhir"]


class ShapeError(ValueError):
    """The payload as a whole is malformed: too large, not JSON, or its top level
    is not a data point, an array of them, or a FHIR resource."""


class MalformedJSON(ShapeError):
    """The payload is not valid UTF-8 JSON."""


class TooManyItems(ShapeError):
    """The payload holds more data points (or Observations) than allowed."""


def detect_format(payload: object) -> Format:
    """A FHIR resource is recognisable by its `resourceType`; anything else is
    taken for Open mHealth."""
    return "fhir" if isinstance(payload, dict) and "resourceType" in payload else "omh"


def decode(raw: bytes | bytearray, *, max_bytes: int | None = None) -> object:
    """The JSON of a payload. Raises ShapeError when it is larger than
    `max_bytes` or not valid JSON."""
    if max_bytes is not None and len(raw) > max_bytes:
        raise ShapeError(f"payload larger than {max_bytes} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedJSON("payload is not valid JSON") from None


def parse_raw(
    raw: bytes | bytearray,
    fmt: Format | None = "omh",
    *,
    now: datetime | None = None,
    max_items: int | None = None,
    max_bytes: int | None = None,
) -> tuple[Format, list[Reading | Refusal]]:
    """Raw bytes → (format, parsed readings/refusals, one per data point).

    `fmt` None: detected (see `detect_format`). Raises ShapeError as `decode`
    and `parse_payload` do (MalformedJSON, TooManyItems for those causes).
    """
    if max_bytes is not None and len(raw) > max_bytes:
        raise ShapeError(f"payload larger than {max_bytes} bytes")
    now = now or datetime.now(UTC)
    if fmt != "fhir":
        fast = parse_json(raw, now=now, max_items=max_items)
        if fast is not None:
            return "omh", fast  # a data point or an array of them: never FHIR
    payload = decode(raw)
    fmt = fmt or detect_format(payload)
    return fmt, parse_payload(payload, fmt, now=now, max_items=max_items)


def items_of(payload: object, *, max_items: int | None = None) -> list[object]:
    """One data point or an array of them, as a list. Raises ShapeError."""
    if isinstance(payload, dict):
        return [payload]
    if isinstance(payload, list):
        if max_items is not None and len(payload) > max_items:
            raise TooManyItems(f"at most {max_items} data points per request")
        return payload
    raise ShapeError("expected a JSON object (one data point) or an array of them")


def parse_payload(
    payload: object,
    fmt: Format = "omh",
    *,
    now: datetime | None = None,
    max_items: int | None = None,
) -> list[Reading | Refusal]:
    """Decoded JSON → parsed readings/refusals, one per data point, in order.

    Raises ShapeError when the top level has the wrong shape or holds more
    than `max_items` data points.
    """
    now = now or datetime.now(UTC)
    if fmt == "fhir":
        if not isinstance(payload, dict):
            raise ShapeError("expected a FHIR Observation or Bundle object")
        if max_items is not None and count_items(payload) > max_items:
            raise TooManyItems(f"at most {max_items} observations per request")
        return parse_fhir(payload, now=now)
    return [parse_data_point(item, now=now) for item in items_of(payload, max_items=max_items)]
