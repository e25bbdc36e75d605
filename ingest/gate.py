"""validate → normalise → (writer: resolve subject → consent → store) → outcome.

Transports call `parse_payload` on what they decoded, then `Writer.write`.
Stateless checks (schema, units, plausibility, future time) happen here; the
consent decision that counts happens inside the writer's transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from schemas.fhir import parse_fhir
from schemas.omh import parse_data_point
from store.writer import Parsed

Format = Literal["omh", "fhir"]


class ShapeError(ValueError):
    """The payload's top level is not a data point, an array, or FHIR resource."""


def items_of(payload: object, *, max_items: int | None = None) -> list[object]:
    """One data point or an array of them, as a list. Raises ShapeError."""
    if isinstance(payload, dict):
        return [payload]
    if isinstance(payload, list):
        if max_items is not None and len(payload) > max_items:
            raise ShapeError(f"at most {max_items} data points per request")
        return payload
    raise ShapeError("expected a JSON object (one data point) or an array of them")


def parse_payload(
    payload: object,
    fmt: Format = "omh",
    *,
    now: datetime | None = None,
    max_items: int | None = None,
) -> list[Parsed]:
    """Decoded JSON → parsed readings/refusals, one per data point, in order."""
    now = now or datetime.now(UTC)
    if fmt == "fhir":
        if not isinstance(payload, dict):
            raise ShapeError("expected a FHIR Observation or Bundle object")
        parsed = parse_fhir(payload, now=now)
        if max_items is not None and len(parsed) > max_items:
            raise ShapeError(f"at most {max_items} observations per request")
        return parsed
    return [parse_data_point(item, now=now) for item in items_of(payload, max_items=max_items)]
