"""Open mHealth data points -> `Reading` | `Refusal`.

A data point is ``{"header": {...}, "body": {...}}`` (omh data-point-1.x with
header-1.2; ``header.user_id`` is required here because it names the person).
Header and body are validated in one pass against the types of exactly the
``schema_id`` declared (`schemas.bodies`), dated (`schemas.timeframe`), then
normalised and checked like every other payload (`schemas.normalise`: unit
table in `schemas.units`, bounds table in `schemas.plausibility`).

Refusal reasons, in the order they are checked:

| reason              | when                                                            |
|---------------------|-----------------------------------------------------------------|
| invalid_schema      | not an object; header or body not per schema (types, required   |
|                     | fields, enumerations, units, time frame); id/user_id missing;   |
|                     | a string past its bound (ids 256 chars, free text 4 KiB)        |
| unsupported_type    | namespace not ``omh``, name not one of the nine, unknown        |
|                     | version; or a dispersion statistic (standard deviation,         |
|                     | variance, quartile deviation, count), which is no measurement   |
| implausible_value   | a canonical value outside its bounds; systolic <= diastolic     |
| future_timestamp    | effective time later than ``now`` + 5 minutes                   |

Effective time: the body's ``effective_time_frame`` (see `schemas.timeframe`),
or ``header.creation_date_time`` where the version lets the body omit it.

Coordinates: a geoposition reading carries them as components and in
``Reading.latitude/longitude``. Any other reading may carry a ``location``
object (in the body, else in ``header.acquisition_provenance``) with
``latitude`` and ``longitude`` as numbers or ``{"value", "unit": "deg"}``;
they go to ``Reading.latitude/longitude`` only when both are present, finite
and on Earth, and are ignored otherwise (the gate decides whether to keep
them). ``detail`` never contains a health value or any other input text.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Final, Literal, NotRequired

from pydantic import StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from schemas.base import MAX_ID, Id, describe, strict
from schemas.bodies import BODIES, COMPONENTS, TIME_FRAME_REQUIRES, UNITLESS_STEPS
from schemas.normalise import normalise
from schemas.reading import (
    INVALID_SCHEMA,
    LOCATION_TYPE,
    TYPES,
    UNSUPPORTED_TYPE,
    Reading,
    Refusal,
)
from schemas.timeframe import DateTime, SchemaProblem, effective_time, utc

# Longest header.id / user_id accepted (and echoed back in a Refusal).
MAX_REF_LENGTH: Final = MAX_ID
# Statistics of spread or counting: their value is not a measurement of the type.
DISPERSION_STATISTICS: Final = frozenset(
    {"standard deviation", "variance", "quartile deviation", "count"}
)

Ref = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REF_LENGTH)]


@strict
class SchemaId(TypedDict):  # schema-id-1.x
    namespace: Id
    name: Id
    version: Id


@strict
class AcquisitionProvenance(TypedDict):  # header-1.2
    source_name: Id
    source_data_point_id: NotRequired[Id]
    source_creation_date_time: NotRequired[DateTime]
    source_last_modification_date_time: NotRequired[DateTime]
    modality: NotRequired[Literal["sensed", "self-reported"]]


@strict
class Header(TypedDict):  # header-1.2, with user_id required
    id: Ref
    creation_date_time: DateTime
    schema_id: SchemaId
    acquisition_provenance: NotRequired[AcquisitionProvenance]
    user_id: Ref


_HEADER: Final = TypeAdapter(Header)


# One adapter per (name, version): header and body validated in one pass.
def _data_point(body: type) -> TypeAdapter[Any]:
    fields = {"header": Header, "body": body}
    return TypeAdapter(strict(TypedDict("DataPoint", fields)))  # type: ignore[operator]


_DATA_POINTS: Final = {key: _data_point(body) for key, body in BODIES.items()}


def parse_data_point(obj: object, *, now: datetime) -> Reading | Refusal:
    """Validate and normalise one decoded Open mHealth data point. Never raises."""
    try:
        return _parse(obj, now)
    except Exception:  # last line of defence: a transport must never see an exception
        return Refusal(_reading_id(obj), INVALID_SCHEMA, "data point could not be parsed")


def _reading_id(obj: object) -> str | None:
    return _peek(obj)[0]


def _peek(obj: object) -> tuple[str | None, tuple[str, str] | None]:
    """Before validation: the reading id, if usable, and the (name, version)
    of a supported omh schema_id, if it is one."""
    header = obj.get("header") if isinstance(obj, dict) else None
    if not isinstance(header, dict):
        return None, None
    rid = header.get("id")
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_REF_LENGTH:
        rid = None
    sid = header.get("schema_id")
    if not isinstance(sid, dict) or sid.get("namespace") != "omh":
        return rid, None
    name, version = sid.get("name"), sid.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        return rid, None
    return rid, ((name, version) if (name, version) in _DATA_POINTS else None)


def _parse(obj: object, now: datetime) -> Reading | Refusal:
    if not isinstance(obj, dict):
        return Refusal(None, INVALID_SCHEMA, "data point must be a JSON object")
    rid, key = _peek(obj)
    if key is None:  # a broken header is invalid_schema before it is unsupported
        try:
            header: Header = _HEADER.validate_python(obj.get("header"))
        except ValidationError as exc:
            return Refusal(rid, INVALID_SCHEMA, describe(exc, "header"))
        return Refusal(rid, UNSUPPORTED_TYPE, _unsupported(header["schema_id"]))
    try:
        dp = _DATA_POINTS[key].validate_python(obj)
    except ValidationError as exc:
        return Refusal(rid, INVALID_SCHEMA, describe(exc))
    header, body = dp["header"], dp["body"]
    name = key[0]

    try:
        tf = body.get("effective_time_frame")
        if tf is None:  # the version lets the body omit it
            when = utc(header["creation_date_time"], "header.creation_date_time")
        else:
            when = effective_time(tf, "body.effective_time_frame")
            need = TIME_FRAME_REQUIRES.get(key)
            if need is not None and need not in tf:
                raise SchemaProblem(f"body.effective_time_frame: {need} required")
    except SchemaProblem as exc:
        return Refusal(rid, INVALID_SCHEMA, str(exc))
    statistic = body.get("descriptive_statistic")
    if statistic in DISPERSION_STATISTICS:
        return Refusal(rid, UNSUPPORTED_TYPE, f"descriptive_statistic '{statistic}' is not stored")

    values = [
        (component, v["value"], v["unit"])
        if isinstance(v := body[field], dict)
        else (component, v, UNITLESS_STEPS)
        for component, field in COMPONENTS[name]
    ]
    components = normalise(rid, values, when, now)
    if isinstance(components, Refusal):
        return components

    if name == LOCATION_TYPE:
        lat: float | None = components[0].value
        lon: float | None = components[1].value
    else:
        lat, lon = _coordinates(obj["body"], obj["header"].get("acquisition_provenance"))
    return Reading(header["id"], header["user_id"], name, when, components, lat, lon)


def _unsupported(sid: SchemaId) -> str:
    if sid["namespace"] != "omh":
        return "schema_id.namespace must be omh"
    if sid["name"] in TYPES:
        known = sorted(v for n, v in BODIES if n == sid["name"])
        return f"schema_id.version of {sid['name']} must be one of {', '.join(known)}"
    return f"schema_id.name must be one of {', '.join(TYPES)}"


def _angle(v: object) -> float | None:
    if isinstance(v, dict):
        if v.get("unit") != "deg":
            return None
        v = v.get("value")
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _coordinates(body: dict[str, Any], provenance: object) -> tuple[float | None, float | None]:
    """Coordinates a non-geoposition reading carries, if well-formed."""
    for holder in (body, provenance):
        loc = holder.get("location") if isinstance(holder, dict) else None
        if not isinstance(loc, dict):
            continue
        lat, lon = _angle(loc.get("latitude")), _angle(loc.get("longitude"))
        if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180:
            return lat, lon
    return None, None
