"""The one path every parsed payload takes to become comparable: units,
plausibility, time. Open mHealth and FHIR both end here."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from schemas.plausibility import implausibility
from schemas.reading import (
    FUTURE_TIMESTAMP,
    IMPLAUSIBLE_VALUE,
    INVALID_SCHEMA,
    Component,
    Refusal,
)
from schemas.timeframe import in_future
from schemas.units import UnitError, make_component


def normalise(
    rid: str | None,
    values: Iterable[tuple[str, float, str]],
    when: datetime,
    now: datetime,
) -> tuple[Component, ...] | Refusal:
    """(component, value, unit as sent) -> canonical components, or the refusal.

    Order of checks: unit known (invalid_schema), value plausible
    (implausible_value), effective time not ahead of `now` (future_timestamp).
    """
    try:
        components = tuple([make_component(name, value, unit) for name, value, unit in values])
    except UnitError as exc:
        return Refusal(rid, INVALID_SCHEMA, str(exc))
    why = implausibility(components)
    if why is not None:
        return Refusal(rid, IMPLAUSIBLE_VALUE, why)
    if in_future(when, now):
        return Refusal(rid, FUTURE_TIMESTAMP, "effective time is more than 5 minutes ahead")
    return components
