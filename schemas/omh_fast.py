"""Open mHealth data points straight from JSON bytes: decode and type-check in one pass.

`parse_json` turns the raw bytes of a payload (one data point or an array of
them) into `Reading`s and `Refusal`s through msgspec Structs generated from
the very TypedDicts `schemas.omh` validates with pydantic, so the two cannot
drift apart. It is a fast path, not a second definition of a data point:

* it is at least as strict as the reference path (`orjson.loads`, then
  `schemas.omh.parse_data_point` per data point): it also refuses properties
  the schemas do not name (but `location`), lower-case ``t``/``z`` in a
  date-time, integers beyond int64, and anything that is not a data point of
  a supported type or an array of them;
* whatever it refuses, or is unsure about, it leaves to the reference path
  by answering None: that path owns every `invalid_schema` and
  `unsupported_type` wording but one (a dispersion statistic).

So what it answers is exactly what the reference path answers for the same
bytes: tests/unit/test_omh_fast.py checks that on the Open mHealth corpus,
on generated data points and damaged bytes, and tests/unit/test_schemas.py on
every input it has. Units, plausibility and future timestamps are checked by
the same functions (`schemas.normalise`) on both paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from functools import cache
from typing import Annotated, Any, Final, Literal, NotRequired, Union, get_args, get_origin

import msgspec
from pydantic import StringConstraints
from typing_extensions import get_type_hints, is_typeddict

from schemas.bodies import BODIES, COMPONENTS, TIME_FRAME_REQUIRES, UNITLESS_STEPS
from schemas.normalise import normalise
from schemas.omh import DISPERSION_STATISTICS, Header
from schemas.reading import LOCATION_TYPE, UNSUPPORTED_TYPE, Reading, Refusal
from schemas.timeframe import DateTime, FullDate, SchemaProblem, effective_time, utc

UNSET: Final = msgspec.UNSET
# Integers the reference decoder (orjson) keeps as integers (it makes floats of
# those beyond -2**63..2**64-1); msgspec bounds int64 only, which is stricter.
_INT: Final = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

# Date-times and dates stay text in the Structs (a msgspec `pattern` costs a
# Python regex call per string); `_parse_time` and `_parse_date` check and
# parse every one of them.
_DATE_TIME: Final = Annotated[str, msgspec.Meta(max_length=64)]
_FULL_DATE: Final = Annotated[str, msgspec.Meta(max_length=64)]
# Where date-times and dates may sit (checked when the Structs are made): the
# Structs keep them as text; `_point` parses every one of them.
_TIME_FIELDS: Final = {
    "Header": {"creation_date_time"},
    "AcquisitionProvenance": {"source_creation_date_time", "source_last_modification_date_time"},
    "TimeFrameV1": {"date_time"},
    "TimeFrameIEEE": {"date_time"},
    "TimeIntervalV1": {"start_date_time", "end_date_time", "date"},
    "TimeIntervalIEEE": {"start_date_time", "end_date_time"},
}


class Angle(msgspec.Struct, forbid_unknown_fields=True):
    value: float
    unit: str


class Location(msgspec.Struct, forbid_unknown_fields=True):
    """A `location` a non-geoposition reading may carry (see `schemas.omh`)."""

    latitude: float | Angle
    longitude: float | Angle


def _convert(tp: Any, where: tuple[str, str]) -> Any:
    """A pydantic-validated payload type -> the msgspec type as strict or stricter."""
    if tp in (DateTime, FullDate):
        if where[1] not in _TIME_FIELDS.get(where[0], ()):
            raise TypeError(f"a date-time at {where} would not be parsed")
        return _DATE_TIME if tp == DateTime else _FULL_DATE
    if is_typeddict(tp):
        return _struct(tp)
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        if base is str and len(meta) == 1 and isinstance(meta[0], StringConstraints):
            c = meta[0]
            return Annotated[str, msgspec.Meta(min_length=c.min_length, max_length=c.max_length)]
    elif origin is Literal:
        if all(type(a) is str for a in get_args(tp)):
            return tp
    elif origin is list:
        (item,) = get_args(tp)
        return list[_convert(item, where)]  # type: ignore[misc]
    elif tp is float:
        return float
    elif tp is int:
        return _INT
    elif tp is str:
        return str
    raise TypeError(f"no fast-path type for {tp!r}")


@cache
def _struct(td: type) -> type[msgspec.Struct]:
    """The Struct of a TypedDict: the same keys, required the same way, no others."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for key, hint in get_type_hints(td, include_extras=True).items():
        required = key in td.__required_keys__  # type: ignore[attr-defined]
        if get_origin(hint) is NotRequired:
            (hint,) = get_args(hint)
            required = False
        ftype = _convert(hint, (td.__name__, key))
        fields.append((key, ftype) if required else (key, ftype | msgspec.UnsetType, UNSET))
    if td in _WITH_LOCATION:  # read for coordinates, never validated by the schema
        fields.append(("location", Location | msgspec.UnsetType, UNSET))
    return msgspec.defstruct(f"Fast{td.__name__}", fields, kw_only=True, forbid_unknown_fields=True)


def _provenance_type() -> type:
    hint = get_type_hints(Header, include_extras=True)["acquisition_provenance"]
    return get_args(hint)[0] if get_origin(hint) is NotRequired else hint


# Where a `location` may sit: every body and the header's acquisition_provenance.
_WITH_LOCATION: Final = {*BODIES.values(), _provenance_type()}
_HEADER: Final = _struct(Header)


# {"header": ..., "body": ...}: the body is decoded by the type its header names, below.
_DATA_POINT: Final = msgspec.defstruct(
    "FastDataPoint", [("header", _HEADER), ("body", msgspec.Raw)], forbid_unknown_fields=True
)

_PAYLOAD: Final = msgspec.json.Decoder(Union[_DATA_POINT, list[_DATA_POINT]])  # type: ignore[valid-type]  # noqa: UP007
_BODIES: Final = {key: msgspec.json.Decoder(_struct(body)) for key, body in BODIES.items()}


class _NotFast(Exception):
    """Leave this payload to the reference path."""


def parse_json(
    raw: bytes | bytearray | memoryview, *, now: datetime, max_items: int | None = None
) -> list[Reading | Refusal] | None:
    """JSON bytes of one data point or an array of them -> one result per data
    point, in order; None when the reference path must answer (for any payload
    it is not sure about, malformed ones included)."""
    try:
        decoded = _PAYLOAD.decode(raw)
        points = decoded if isinstance(decoded, list) else [decoded]
        if max_items is not None and len(points) > max_items:
            return None
        return [_point(p, now) for p in points]
    except Exception:  # malformed, unexpected or not ours: the reference path answers
        return None


def _point(dp: Any, now: datetime) -> Reading | Refusal:
    header = dp.header
    sid = header.schema_id
    if sid.namespace != "omh":
        raise _NotFast
    key = (sid.name, sid.version)
    decoder = _BODIES.get(key)
    if decoder is None:
        raise _NotFast
    body: Any = decoder.decode(dp.body)
    rid: str = header.id
    name = key[0]
    # Every date-time is parsed (the reference validates them all); ValueError
    # (say 30 February) goes to the reference path.
    created_text = header.creation_date_time
    created = _parse_time(created_text)
    prov = header.acquisition_provenance
    if prov is not UNSET:
        for text in (prov.source_creation_date_time, prov.source_last_modification_date_time):
            if text is not UNSET:
                _parse_time(text)

    tf = body.effective_time_frame
    if tf is UNSET:  # the version lets the body omit it
        when = utc(created, "header.creation_date_time")
    else:
        when = _effective_time(tf, created_text, created)
        need = TIME_FRAME_REQUIRES.get(key)
        if need is not None and getattr(tf, need) is UNSET:
            raise _NotFast
    statistic = getattr(body, "descriptive_statistic", UNSET)
    if statistic in DISPERSION_STATISTICS:
        return Refusal(rid, UNSUPPORTED_TYPE, f"descriptive_statistic '{statistic}' is not stored")

    values = [
        (component, v, UNITLESS_STEPS)
        if type(v := getattr(body, field)) is float
        else (component, v.value, v.unit)
        for component, field in COMPONENTS[name]
    ]
    components = normalise(rid, values, when, now)
    if isinstance(components, Refusal):
        return components

    if name == LOCATION_TYPE:
        lat: float | None = components[0].value
        lon: float | None = components[1].value
    else:
        lat, lon = _coordinates((body.location, UNSET if prov is UNSET else prov.location))
    return Reading(rid, header.user_id, name, when, components, lat, lon)


def _parse_time(s: str) -> datetime:
    """An RFC 3339 date-time as the reference reads it, of the shapes this path
    takes: ``YYYY-MM-DDTHH:MM:SS``, then ``.`` and digits or nothing, then ``Z``
    or ``+HH:MM``/``-HH:MM`` (minutes 00..59); upper-case T and Z only.
    datetime.fromisoformat checks the digits and the calendar and truncates
    the fraction to microseconds, as the reference does (ValueError, such as
    for 30 February, sends the payload to the reference path). Cheap checks
    on purpose: a regex costs more than the parse."""
    if s[4:17:3] != "--T::" or s[19:20] not in _AFTER_SECONDS:
        raise _NotFast
    if s[-1] != "Z" and not (s[-6] in "+-" and s[-3] == ":" and s[-2] < "6"):
        raise _NotFast
    return datetime.fromisoformat(s)


_AFTER_SECONDS: Final = frozenset(".Z+-")


def _parse_date(s: str) -> date:
    """A full-date, ``YYYY-MM-DD`` (date.fromisoformat checks the rest)."""
    if len(s) != 10 or s[4] != "-" or s[7] != "-":
        raise _NotFast
    return date.fromisoformat(s)


def _effective_time(tf: Any, created_text: str, created: datetime) -> datetime:
    """`schemas.timeframe.effective_time` of a time frame Struct (SchemaProblem:
    _NotFast). A date_time that is the creation date-time's text is not parsed twice."""
    ti = tf.time_interval
    if ti is UNSET:
        text = tf.date_time
        if text is UNSET:
            raise _NotFast
        t = created if text == created_text else _parse_time(text)
        return utc(t, "body.effective_time_frame.date_time")
    frame: dict[str, Any] = {"time_interval": _as_dict(ti)}
    if tf.date_time is not UNSET:
        frame["date_time"] = _parse_time(tf.date_time)
    try:
        return effective_time(frame, "body.effective_time_frame")  # type: ignore[arg-type]
    except SchemaProblem:
        raise _NotFast from None


def _as_dict(ti: Any) -> dict[str, Any]:
    """A time interval Struct as the dict pydantic makes of it: absent keys
    absent, date-times and dates parsed, the duration a dict."""
    out: dict[str, Any] = {}
    for name in ti.__struct_fields__:
        v = getattr(ti, name)
        if v is UNSET:
            continue
        if name == "duration":
            out[name] = {"value": v.value, "unit": v.unit}
        elif name == "date":
            out[name] = _parse_date(v)
        elif name in ("start_date_time", "end_date_time"):
            out[name] = _parse_time(v)
        else:
            out[name] = v
    return out


def _angle(v: float | Angle) -> float | None:
    if isinstance(v, Angle):
        if v.unit != "deg":
            return None
        return v.value
    return v


def _coordinates(holders: Iterable[Location | Any]) -> tuple[float | None, float | None]:
    for loc in holders:
        if loc is UNSET:
            continue
        lat, lon = _angle(loc.latitude), _angle(loc.longitude)
        if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180:
            return lat, lon
    return None, None
