"""Time frames of Open mHealth / IEEE 1752.1 and the effective time of a reading.

Two families are modelled, as the schemas define them:

* omh ``time-frame-1.x`` / ``time-interval-1.x``: ``date_time`` xor
  ``time_interval``; an interval is exactly one of start+duration,
  end+duration, start+end or date+part_of_day (JSON Schema ``oneOf``).
* IEEE 1752.1 ``time-frame-1.0`` / ``time-interval-1.0`` (used by the newest
  omh versions): the same without date+part_of_day.

Date-times follow RFC 3339 (``format: date-time``): a UTC offset is required,
so every effective time is timezone-aware; it is returned in UTC.

The effective time of a reading is ``date_time``, else the interval's
``start_date_time``, else ``end_date_time - duration``, else ``date`` at the
start of ``part_of_day`` (night 00:00, morning 06:00, afternoon 12:00,
evening 18:00) in UTC. Interval order (start <= end) is not checked: the
schemas do not require it and the corpus holds a valid sample that violates
it (body-temperature 4.0 valid-temperature-with-statistic).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Final, Literal

from pydantic import GetPydanticSchema
from pydantic_core import core_schema
from typing_extensions import TypedDict

from schemas.base import strict

# Futures up to this far ahead are clock skew, not a wrong timestamp.
FUTURE_TOLERANCE: Final = timedelta(minutes=5)

_RFC3339: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_FULL_DATE: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def _text_then(pattern: str, parsed: core_schema.CoreSchema) -> GetPydanticSchema:
    """A JSON string matching `pattern`, then parsed (in pydantic-core) as `parsed`."""
    schema = core_schema.chain_schema(
        [core_schema.str_schema(strict=True, max_length=64, pattern=pattern), parsed]
    )
    return GetPydanticSchema(lambda _tp, _handler: schema)


# RFC 3339 date-time: a real calendar date-time with its offset (aware datetime).
DateTime = Annotated[
    datetime, _text_then(_RFC3339, core_schema.datetime_schema(strict=False, tz_constraint="aware"))
]
# full-date-1.x: YYYY-MM-DD, a real calendar date.
FullDate = Annotated[date, _text_then(_FULL_DATE, core_schema.date_schema(strict=False))]
PartOfDay = Literal["morning", "afternoon", "evening", "night"]
DurationUnit = Literal["ps", "ns", "us", "ms", "sec", "min", "h", "d", "wk", "Mo", "yr"]

PART_OF_DAY_START: Final[dict[str, timedelta]] = {
    "night": timedelta(hours=0),
    "morning": timedelta(hours=6),
    "afternoon": timedelta(hours=12),
    "evening": timedelta(hours=18),
}

# duration-unit-value-1.x units, in seconds (UCUM: Mo = 1/12 mean Julian year).
DURATION_SECONDS: Final[dict[str, float]] = {
    "ps": 1e-12,
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "sec": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "wk": 604800.0,
    "Mo": 2629800.0,
    "yr": 31557600.0,
}


class SchemaProblem(ValueError):
    """A structural problem found after type validation (-> invalid_schema)."""


@strict
class DurationUnitValue(TypedDict):
    value: float
    unit: DurationUnit


@strict
class TimeIntervalIEEE(TypedDict, total=False):
    start_date_time: DateTime
    end_date_time: DateTime
    duration: DurationUnitValue


@strict
class TimeIntervalV1(TimeIntervalIEEE, total=False):
    date: FullDate
    part_of_day: PartOfDay


@strict
class TimeFrameV1(TypedDict, total=False):
    date_time: DateTime
    time_interval: TimeIntervalV1


@strict
class TimeFrameIEEE(TypedDict, total=False):
    date_time: DateTime
    time_interval: TimeIntervalIEEE


def utc(t: datetime, field: str) -> datetime:
    """An aware datetime in UTC."""
    try:
        return t.astimezone(UTC)
    except OverflowError:
        raise SchemaProblem(f"{field}: date-time out of range") from None


def _duration(d: Mapping[str, object], field: str) -> timedelta:
    value, unit = d["value"], d["unit"]
    assert isinstance(value, float) and isinstance(unit, str)
    try:
        return timedelta(seconds=value * DURATION_SECONDS[unit])
    except OverflowError:
        raise SchemaProblem(f"{field}: duration out of range") from None


def effective_time(tf: TimeFrameV1 | TimeFrameIEEE, field: str) -> datetime:
    """Check the time frame's ``oneOf`` rules and return its effective time (UTC).

    `tf` is already type-validated; a version whose time interval has no
    date+part_of_day (IEEE) has had those keys dropped.
    """
    dt = tf.get("date_time")
    ti = tf.get("time_interval")
    if (dt is None) == (ti is None):
        raise SchemaProblem(f"{field}: needs exactly one of date_time, time_interval")
    if dt is not None:
        return utc(dt, f"{field}.date_time")
    assert ti is not None
    return _interval_start(ti, f"{field}.time_interval")


def _interval_start(ti: Mapping[str, object], field: str) -> datetime:
    start, end, dur, day, part = (
        ti.get("start_date_time"),
        ti.get("end_date_time"),
        ti.get("duration"),
        ti.get("date"),
        ti.get("part_of_day"),
    )
    branches = (
        (start is not None and dur is not None)
        + (end is not None and dur is not None)
        + (start is not None and end is not None)
        + (day is not None and part is not None)
    )
    if branches != 1:
        raise SchemaProblem(f"{field}: needs exactly one of {_BRANCHES}")
    if isinstance(start, datetime):
        return utc(start, f"{field}.start_date_time")
    if isinstance(end, datetime) and isinstance(dur, Mapping):
        try:
            return utc(end - _duration(dur, f"{field}.duration"), f"{field}.end_date_time")
        except OverflowError:
            raise SchemaProblem(f"{field}: duration out of range") from None
    assert isinstance(day, date) and isinstance(part, str)
    return datetime.combine(day, datetime.min.time(), UTC) + PART_OF_DAY_START[part]


_BRANCHES: Final = "start+end, start+duration, end+duration or date+part_of_day (omh 1.x only)"


def in_future(t: datetime, now: datetime) -> bool:
    """True when `t` lies beyond `now` plus the clock-skew tolerance."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return t > now + FUTURE_TOLERANCE
