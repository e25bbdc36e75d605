"""Hypothesis strategies for Open mHealth data points: `data_points()` (every
property any body names, valid or not) and `nearly_valid()` (a valid data
point of any type and version, made from the very TypedDicts the reference
path validates with, then at most a few damages). For the differential tests
of the fast path (tests/unit/test_omh_fast.py)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, NotRequired, get_args, get_origin

from hypothesis import strategies as st
from typing_extensions import get_type_hints, is_typeddict

from schemas.bodies import BODIES
from schemas.omh import Header
from schemas.timeframe import DateTime, FullDate, TimeFrameIEEE, TimeFrameV1


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.integers(0, 10**n - 1).map(lambda i: str(i).zfill(n))


def _small(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(lambda i: str(i).zfill(2))


ZONES = st.one_of(
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+02:00", "-05:30", "+23:59", "+0100", ""]),
    st.tuples(st.sampled_from("+-"), _small(0, 25), _small(0, 61)).map(
        "{0[0]}{0[1]}:{0[2]}".format
    ),
)
DATE_TIMES = st.one_of(
    st.sampled_from(["2024-03-01T10:00:00Z", "2024-02-29T23:59:59.999999+01:00"]),
    st.builds(
        "{}-{}-{}{}{}:{}:{}{}{}".format,
        st.sampled_from(["2024", "2023", "0001", "9999", "0000", "1970"]) | _digits(4),
        _small(0, 13),
        _small(0, 32),
        st.sampled_from(["T", "T", "T", "t", " "]),
        _small(0, 25),
        _small(0, 60),
        _small(0, 61),
        st.just("") | st.integers(1, 12).flatmap(_digits).map(lambda d: "." + d),
        ZONES,
    ),
)
DATES = st.one_of(
    st.just("2024-02-29"),
    st.builds("{}-{}-{}".format, _digits(4), _small(0, 13), _small(0, 32)),
)
NUMBERS = st.one_of(
    st.integers(-5, 400),
    st.floats(-10, 500, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -0.0, 0.0, 1e308, 5e-324, 2**63, 2**63 - 1, -(2**63), 2**64 - 1]),
    st.booleans(),
    st.just("62"),
    st.none(),
)
UNITS = st.sampled_from(
    ["beats/min", "mmHg", "kPa", "mg/dL", "mmol/L", "mmol/l", "kg", "lb", "g", "oz", "Ton", "gr",
     "C", "F", "K", "Cel", "%", "L/min", "breaths/min", "steps", "{steps}", "deg", "m", "ft",
     "h", "min", "sec", "d", "wk", "Mo", "yr", "fortnight", "dB", ""]
)  # fmt: skip
ENUMS = st.sampled_from(
    ["average", "maximum", "minimum", "median", "sum", "count", "variance", "standard deviation",
     "at rest", "active", "during sleep", "fasting", "whole blood", "plasma", "capillary blood",
     "sitting", "lying down", "semi-recumbent", "left wrist", "oral", "axillary", "tympanic",
     "peripheral capillary", "nasal cannula", "pulse oximetry", "GPS", "sensed", "self-reported",
     "morning", "night", "teatime", "Average", "x" * 300]
)  # fmt: skip


def _uv(unit: st.SearchStrategy[str] = UNITS) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"value": NUMBERS, "unit": unit})


INTERVALS = st.fixed_dictionaries(
    {},
    optional={
        "start_date_time": DATE_TIMES,
        "end_date_time": DATE_TIMES,
        "duration": _uv(),
        "date": DATES,
        "part_of_day": ENUMS,
    },
)
TIME_FRAMES = st.one_of(
    st.fixed_dictionaries({"date_time": DATE_TIMES}),
    st.fixed_dictionaries({"time_interval": INTERVALS}),
    st.fixed_dictionaries({}, optional={"date_time": DATE_TIMES, "time_interval": INTERVALS}),
)
ANGLES = st.one_of(NUMBERS, _uv(st.sampled_from(["deg", "rad"])), st.just("60.1"))
LOCATIONS = st.one_of(
    st.fixed_dictionaries({"latitude": ANGLES, "longitude": ANGLES}),
    st.fixed_dictionaries({}, optional={"latitude": ANGLES, "longitude": ANGLES, "x": NUMBERS}),
    st.just("Helsinki"),
)
# Every property any body of the nine types names, with values valid or not.
BODY_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "heart_rate": _uv(),
    "systolic_blood_pressure": _uv(),
    "diastolic_blood_pressure": _uv(),
    "blood_glucose": _uv(),
    "body_weight": _uv(),
    "body_temperature": _uv(),
    "oxygen_saturation": _uv(),
    "respiratory_rate": _uv(),
    "step_count": NUMBERS | _uv(),
    "latitude": _uv(),
    "longitude": _uv(),
    "elevation": _uv(),
    "supplemental_oxygen_flow_rate": _uv(),
    "number_of_satellites_in_view": NUMBERS,
    "satellite_signal_strengths": st.lists(_uv(), max_size=2),
    "descriptive_statistic_denominator": ENUMS,
    "user_notes": st.text(max_size=20),
    "location": LOCATIONS,
    "extra": NUMBERS,
}
for _field in (
    "descriptive_statistic",
    "temporal_relationship_to_physical_activity",
    "temporal_relationship_to_sleep",
    "temporal_relationship_to_meal",
    "blood_specimen_type",
    "specimen_source",
    "position_during_measurement",
    "body_posture",
    "measurement_location",
    "system",
    "oxygen_therapy_mode_of_administration",
    "measurement_method",
    "positioning_system",
):
    BODY_FIELDS[_field] = ENUMS
# The fields of each type (the ones its values sit in), so most points are nearly valid.
VALUES = {
    "heart-rate": ["heart_rate"],
    "blood-pressure": ["systolic_blood_pressure", "diastolic_blood_pressure"],
    "blood-glucose": ["blood_glucose"],
    "body-weight": ["body_weight"],
    "body-temperature": ["body_temperature"],
    "oxygen-saturation": ["oxygen_saturation"],
    "respiratory-rate": ["respiratory_rate"],
    "step-count": ["step_count"],
    "geoposition": ["latitude", "longitude"],
}
HR = {"value": 62, "unit": "beats/min"}


@st.composite
def data_points(draw: st.DrawFn) -> dict[str, Any]:
    name, version = draw(st.sampled_from(sorted(BODIES)))
    body: dict[str, Any] = {}
    for field in VALUES[name]:
        if draw(st.integers(0, 9)):  # mostly present
            body[field] = draw(BODY_FIELDS[field])
    if draw(st.integers(0, 5)):
        body["effective_time_frame"] = draw(TIME_FRAMES)
    for field in draw(st.lists(st.sampled_from(sorted(BODY_FIELDS)), max_size=3)):
        body[field] = draw(BODY_FIELDS[field])
    header: dict[str, Any] = {
        "id": draw(st.sampled_from(["dp-1", "é-ü", "x" * 256, "x" * 257, ""]) | st.text()),
        "creation_date_time": draw(DATE_TIMES),
        "schema_id": {"namespace": "omh", "name": name, "version": version},
        "user_id": draw(st.sampled_from(["user-1", "\x00", "u" * 256]) | st.text(max_size=5)),
    }
    if draw(st.booleans()):
        header["acquisition_provenance"] = draw(
            st.fixed_dictionaries(
                {"source_name": st.sampled_from(["watch", "ü" * 256, "x" * 257])},
                optional={
                    "modality": ENUMS,
                    "source_creation_date_time": DATE_TIMES,
                    "source_last_modification_date_time": DATE_TIMES,
                    "source_data_point_id": st.text(max_size=5),
                    "location": LOCATIONS,
                },
            )
        )
    return {"header": header, "body": body}


# Nearly valid: a valid data point of any type and version (made from the very
# TypedDicts the reference validates with), then at most a few damages.
VALID_TIMES = st.builds(
    lambda t, digits, offset: (
        t.strftime("%Y-%m-%dT%H:%M:%S")
        + (("." + f"{t.microsecond:06d}{t.microsecond:03d}"[:digits]) if digits else "")
        + (
            "Z"
            if offset is None
            else "{}{:02d}:{:02d}".format("+-"[offset < 0], *divmod(abs(offset), 60))
        )
    ),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(0, 9),
    st.none() | st.integers(-1439, 1439),
)
VALID_DATES = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 1, 1)).map(str)
MEASURES = st.one_of(
    st.integers(0, 300), st.floats(0, 300), st.floats(-1000, 250_000), st.integers(-1, 200_001)
)


def _valid(tp: Any) -> st.SearchStrategy[Any]:
    if tp == DateTime:
        return VALID_TIMES
    if tp == FullDate:
        return VALID_DATES
    if tp in (TimeFrameV1, TimeFrameIEEE):
        return _time_frames(tp is TimeFrameV1)
    if is_typeddict(tp):
        required, optional = {}, {}
        for key, hint in get_type_hints(tp, include_extras=True).items():
            if get_origin(hint) is NotRequired:
                (hint,) = get_args(hint)
                optional[key] = _valid(hint)
            elif key in tp.__required_keys__:
                required[key] = _valid(hint)
            else:
                optional[key] = _valid(hint)
        return st.fixed_dictionaries(required, optional=optional)
    origin = get_origin(tp)
    if origin is Annotated:
        c = get_args(tp)[1]
        return st.text(st.characters(codec="utf-8"), min_size=c.min_length or 0, max_size=8)
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if origin is list:
        return st.lists(_valid(get_args(tp)[0]), max_size=2)
    if tp is float:
        return MEASURES
    if tp is int:
        return st.integers(-100, 100)
    raise TypeError(tp)


def _time_frames(omh: bool) -> st.SearchStrategy[dict[str, Any]]:
    duration = st.fixed_dictionaries(
        {
            "value": st.integers(0, 100) | st.floats(0, 1e4),
            "unit": st.sampled_from(["h", "min", "d", "wk", "sec", "Mo", "yr"]),
        }
    )
    intervals = [
        st.fixed_dictionaries({"start_date_time": VALID_TIMES, "end_date_time": VALID_TIMES}),
        st.fixed_dictionaries({"start_date_time": VALID_TIMES, "duration": duration}),
        st.fixed_dictionaries({"end_date_time": VALID_TIMES, "duration": duration}),
    ]
    if omh:
        intervals.append(
            st.fixed_dictionaries(
                {
                    "date": VALID_DATES,
                    "part_of_day": st.sampled_from(["morning", "afternoon", "evening", "night"]),
                }
            )
        )
    return st.one_of(
        st.fixed_dictionaries({"date_time": VALID_TIMES}),
        st.one_of(intervals).map(lambda ti: {"time_interval": ti}),
    )


DAMAGE = st.one_of(NUMBERS, ENUMS, UNITS, DATE_TIMES, LOCATIONS, st.just({}), st.just([]))


def _damage(doc: Any, path: list[Any], value: Any, delete: bool) -> None:
    *parents, last = path
    for key in parents:
        doc = doc[key]
    if delete:
        del doc[last]
    else:
        doc[last] = value


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k)))
    return out


@st.composite
def nearly_valid(draw: st.DrawFn) -> dict[str, Any]:
    name, version = draw(st.sampled_from(sorted(BODIES)))
    body = draw(_valid(BODIES[(name, version)]))
    header = draw(_valid(Header))
    header["schema_id"] = {"namespace": "omh", "name": name, "version": version}
    point = {"header": header, "body": body}
    if draw(st.integers(0, 3)) == 0:
        body["location"] = draw(LOCATIONS)
    if "acquisition_provenance" in header and draw(st.integers(0, 3)) == 0:
        header["acquisition_provenance"]["location"] = draw(LOCATIONS)
    if draw(st.integers(0, 5)) == 0:
        body["extra"] = draw(NUMBERS)  # a property no schema names
    for _ in range(draw(st.integers(0, 2))):
        paths = _paths(point)
        path = draw(st.sampled_from(paths))
        if path[0] == "header" and path[1:2] == ("schema_id",) and draw(st.booleans()):
            continue  # mostly keep the type
        _damage(point, list(path), draw(DAMAGE), draw(st.integers(0, 3)) == 0)
    return point
