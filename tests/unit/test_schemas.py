"""parse_data_point on hostile and edge-case input: exact reason codes, unit
normalisation, effective time, coordinates, and a property that it never raises."""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    FUTURE_TIMESTAMP,
    IMPLAUSIBLE_VALUE,
    INVALID_SCHEMA,
    REASONS,
    UNSUPPORTED_TYPE,
    Reading,
    Refusal,
    parse_data_point,
)
from schemas.omh import DISPERSION_STATISTICS
from schemas.plausibility import BOUNDS
from schemas.units import CANONICAL
from tests.support import fastpath

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HR = {"value": 62, "unit": "beats/min"}
AT = {"date_time": "2024-03-01T10:00:00Z"}
T0, T1 = "2024-03-01T10:00:00Z", "2024-03-01T11:00:00Z"


def uv(value: object, unit: str) -> dict[str, object]:
    return {"value": value, "unit": unit}


def one(field: str, value: object, unit: str) -> dict[str, object]:
    """A body with one unit value and the usual time frame."""
    return {field: uv(value, unit), "effective_time_frame": AT}


def interval(**kw: object) -> dict[str, object]:
    return {"time_interval": kw}


def dp(
    name: str = "heart-rate",
    version: str = "2.0",
    body: Any = None,
    **header: Any,
) -> dict[str, Any]:
    h: dict[str, Any] = {
        "id": "dp-1",
        "creation_date_time": "2024-03-01T11:00:00Z",
        "schema_id": {"namespace": "omh", "name": name, "version": version},
        "user_id": "user-1",
    }
    h.update(header)
    return {
        "header": {k: v for k, v in h.items() if v is not ...},
        "body": {"heart_rate": HR, "effective_time_frame": AT} if body is None else body,
    }


def parse(obj: object) -> Reading | Refusal:
    """parse_data_point, and the fast path on the same data point as JSON must agree."""
    fastpath.check_object(obj, NOW)
    return parse_data_point(obj, now=NOW)


def reading(obj: object) -> Reading:
    result = parse(obj)
    assert isinstance(result, Reading), result
    return result


def refused(obj: object, reason: str) -> Refusal:
    result = parse(obj)
    assert isinstance(result, Refusal), result
    assert result.reason == reason, result
    assert result.detail != "data point could not be parsed"  # not the catch-all
    return result


def test_a_valid_data_point() -> None:
    r = reading(dp())
    assert r.id == "dp-1"
    assert r.user_ref == "user-1"
    assert r.type == "heart-rate"
    assert r.effective_time == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    (c,) = r.components
    assert (c.name, c.value, c.unit, c.orig_value, c.orig_unit) == (
        "heart_rate",
        62.0,
        "/min",
        62.0,
        "beats/min",
    )
    assert (r.latitude, r.longitude) == (None, None)


# --- not a data point ----------------------------------------------------------
@pytest.mark.parametrize("obj", [None, [], [dp()], "x", 1, 1.5, True, b"{}", {1, 2}, object()])
def test_non_objects(obj: object) -> None:
    assert refused(obj, INVALID_SCHEMA).id is None


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        ({"body": {}}, "header"),
        ({"header": None, "body": {}}, "header"),
        ({"header": [], "body": {}}, "header"),
        ({"header": dp()["header"]}, "body"),
        ({"header": dp()["header"], "body": []}, "body"),
        ({"header": dp()["header"], "body": "heart_rate=62"}, "body"),
    ],
)
def test_missing_or_wrong_header_and_body(obj: dict[str, Any], where: str) -> None:
    assert refused(obj, INVALID_SCHEMA).detail.startswith(where)


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ({"user_id": ...}, "header.user_id"),
        ({"user_id": ""}, "header.user_id"),
        ({"user_id": 42}, "header.user_id"),
        ({"user_id": None}, "header.user_id"),
        ({"id": ...}, "header.id"),
        ({"id": 7}, "header.id"),
        ({"creation_date_time": ...}, "header.creation_date_time"),
        ({"creation_date_time": "2024-03-01"}, "header.creation_date_time"),
        ({"creation_date_time": "2024-03-01T10:00:00"}, "header.creation_date_time"),  # no offset
        ({"creation_date_time": 1709287200}, "header.creation_date_time"),
        ({"creation_date_time": "2024-02-30T10:00:00Z"}, "header.creation_date_time"),
        ({"acquisition_provenance": {"modality": "sensed"}}, "header.acquisition_provenance"),
        ({"acquisition_provenance": {"source_name": "w", "modality": "guessed"}}, "header."),
        ({"schema_id": {"namespace": "omh", "name": "heart-rate"}}, "header.schema_id.version"),
        ({"schema_id": "omh:heart-rate:2.0"}, "header.schema_id"),
    ],
)
def test_header_errors(header: dict[str, Any], field: str) -> None:
    assert refused(dp(**header), INVALID_SCHEMA).detail.startswith(field)


def test_missing_id_gives_no_id() -> None:
    assert refused(dp(id=...), INVALID_SCHEMA).id is None


# --- wrong types, NaN, huge, deep ---------------------------------------------
@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), "62", None, True, [62], {"value": 62}, 10**400],
)
def test_bad_numbers(value: object) -> None:
    r = refused(dp(body=one("heart_rate", value, "beats/min")), INVALID_SCHEMA)
    assert r.detail.startswith("body.heart_rate.value")


def test_bad_step_count_number() -> None:
    body = {"step_count": float("nan")}
    refused(dp("step-count", "1.0", body), INVALID_SCHEMA)


def test_huge_strings() -> None:
    huge = "9" * 5_000_000
    refused(dp(id=huge), INVALID_SCHEMA)
    refused(dp(user_id=huge), INVALID_SCHEMA)
    refused(dp(body=one("heart_rate", 62, huge)), INVALID_SCHEMA)
    body = {"heart_rate": HR, "effective_time_frame": {"date_time": "2024-03-01T10:00:00" + huge}}
    refused(dp(body=body), INVALID_SCHEMA)
    # Every string is bounded (ids 256, free text 4 KiB): an over-long schema
    # name is a broken header, free text the schema allows is refused past 4 KiB.
    r = refused(dp(schema_id={"namespace": "omh", "name": huge, "version": "1.0"}), INVALID_SCHEMA)
    assert r.detail == "header.schema_id.name: too long"
    r = refused(dp(version="1.0", body={"heart_rate": HR, "user_notes": huge}), INVALID_SCHEMA)
    assert r.detail == "body.user_notes: too long" and huge not in repr(r)


def _nest(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = {"a": [leaf]}
    return leaf


def test_deep_nesting() -> None:
    deep = _nest(50_000, 1)
    refused(deep, INVALID_SCHEMA)
    refused({"header": deep, "body": deep}, INVALID_SCHEMA)
    refused(dp(body={"heart_rate": deep, "effective_time_frame": AT}), INVALID_SCHEMA)
    # unknown properties are allowed by the schemas and never walked
    reading(dp(body={"heart_rate": HR, "effective_time_frame": AT, "extra": deep}))
    reading(dp(body={"heart_rate": HR, "effective_time_frame": AT, "location": deep}))


def test_explicit_null_is_not_absence() -> None:
    body = {"heart_rate": HR, "effective_time_frame": AT, "descriptive_statistic": None}
    refused(dp(body=body), INVALID_SCHEMA)
    refused(
        dp(version="1.0", body={"heart_rate": HR, "effective_time_frame": None}), INVALID_SCHEMA
    )


# --- units -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "version", "body"),
    [
        ("heart-rate", "2.0", one("heart_rate", 62, "bpm")),
        ("heart-rate", "2.0", one("heart_rate", 62, "/min")),
        (
            "blood-pressure",
            "4.0",
            {
                "systolic_blood_pressure": {"value": 16, "unit": "kPa"},
                "diastolic_blood_pressure": {"value": 10, "unit": "kPa"},
                "effective_time_frame": AT,
            },
        ),
        ("blood-glucose", "3.0", one("blood_glucose", 5, "mmol/l")),
        ("body-weight", "2.0", one("body_weight", 70, "KG")),
        ("body-temperature", "3.0", one("body_temperature", 37, "Cel")),
        ("oxygen-saturation", "2.0", one("oxygen_saturation", 0.97, "1")),
        ("step-count", "3.0", one("step_count", 10, "{steps}")),
    ],
)
def test_units_outside_the_schema(name: str, version: str, body: dict[str, Any]) -> None:
    assert ".unit: not an allowed value" in refused(dp(name, version, body), INVALID_SCHEMA).detail


def _one(name: str, version: str, field: str, value: float, unit: str) -> tuple[Any, ...]:
    (c,) = reading(dp(name, version, one(field, value, unit))).components
    return c.value, c.unit, c.orig_value, c.orig_unit


def test_lb_to_kg() -> None:
    value, unit, orig, orig_unit = _one("body-weight", "2.0", "body_weight", 154.3, "lb")
    assert (unit, orig, orig_unit) == ("kg", 154.3, "lb")
    assert value == pytest.approx(154.3 * 0.45359237, rel=1e-12)


@pytest.mark.parametrize(
    ("unit", "factor"),
    [("kg", 1), ("g", 1e-3), ("oz", 0.028349523125), ("Ton", 907.18474), ("gr", 64.79891e-6)],
)
def test_mass_units(unit: str, factor: float) -> None:
    sent = 70 / factor
    value, canonical, _, _ = _one("body-weight", "3.0", "body_weight", sent, unit)
    assert canonical == "kg"
    assert value == pytest.approx(70, rel=1e-12)


def test_mmol_per_l_to_mg_per_dl() -> None:
    value, unit, orig, orig_unit = _one("blood-glucose", "4.0", "blood_glucose", 5.5, "mmol/L")
    assert (unit, orig, orig_unit) == ("mg/dL", 5.5, "mmol/L")
    assert value == pytest.approx(5.5 * 18.0156)


@pytest.mark.parametrize(
    ("sent", "unit", "cel"), [(98.6, "F", 37.0), (310.15, "K", 37.0), (36.6, "C", 36.6)]
)
def test_temperature_to_cel(sent: float, unit: str, cel: float) -> None:
    value, canonical, orig, orig_unit = _one(
        "body-temperature", "4.0", "body_temperature", sent, unit
    )
    assert (canonical, orig, orig_unit) == ("Cel", sent, unit)
    assert value == pytest.approx(cel)


def test_blood_pressure_components() -> None:
    body = {
        "systolic_blood_pressure": {"value": 121, "unit": "mmHg"},
        "diastolic_blood_pressure": {"value": 79, "unit": "mmHg"},
        "effective_time_frame": AT,
    }
    r = reading(dp("blood-pressure", "3.1", body))
    assert [(c.name, c.value, c.unit, c.orig_unit) for c in r.components] == [
        ("systolic_blood_pressure", 121.0, "mm[Hg]", "mmHg"),
        ("diastolic_blood_pressure", 79.0, "mm[Hg]", "mmHg"),
    ]


def test_every_type_lands_on_its_canonical_unit() -> None:
    assert set(CANONICAL) == set(BOUNDS)
    body = {
        "step_count": 5000,
        "effective_time_frame": interval(start_date_time=T0, end_date_time=T1),
    }
    (c,) = reading(dp("step-count", "2.0", body)).components
    assert (c.name, c.value, c.unit, c.orig_unit) == ("step_count", 5000.0, "{steps}", "{steps}")


# --- plausibility -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "version", "field", "value", "unit"),
    [
        ("heart-rate", "2.0", "heart_rate", 19, "beats/min"),
        ("heart-rate", "2.0", "heart_rate", 301, "beats/min"),
        ("heart-rate", "2.0", "heart_rate", -62, "beats/min"),
        ("body-weight", "2.0", "body_weight", 1500, "lb"),
        ("body-weight", "2.0", "body_weight", 150, "g"),
        ("body-temperature", "3.0", "body_temperature", 120, "F"),
        ("body-temperature", "3.0", "body_temperature", 37, "K"),
        ("blood-glucose", "3.0", "blood_glucose", 150, "mmol/L"),
        ("blood-glucose", "3.0", "blood_glucose", 5, "mg/dL"),
        ("oxygen-saturation", "2.0", "oxygen_saturation", 101, "%"),
        ("respiratory-rate", "2.0", "respiratory_rate", 81, "breaths/min"),
        ("step-count", "3.0", "step_count", -1, "steps"),
        ("step-count", "3.0", "step_count", 200_001, "steps"),
    ],
)
def test_implausible(name: str, version: str, field: str, value: float, unit: str) -> None:
    body = one(field, value, unit)
    if name == "step-count":
        body["effective_time_frame"] = interval(start_date_time=T0, end_date_time=T1)
    r = refused(dp(name, version, body), IMPLAUSIBLE_VALUE)
    lo, hi = BOUNDS[field]
    assert r.detail == f"{field} outside the plausible range {lo:g}..{hi:g} {CANONICAL[field]}"


@pytest.mark.parametrize(
    ("lat", "lon", "field"), [(91, 0, "latitude"), (-90.5, 0, "latitude"), (0, -181, "longitude")]
)
def test_implausible_positions(lat: float, lon: float, field: str) -> None:
    body = {"latitude": uv(lat, "deg"), "longitude": uv(lon, "deg"), "effective_time_frame": AT}
    assert refused(dp("geoposition", "1.0", body), IMPLAUSIBLE_VALUE).detail.startswith(field)


def test_unitless_step_counts_are_checked_too() -> None:
    refused(dp("step-count", "1.0", {"step_count": -5}), IMPLAUSIBLE_VALUE)


@pytest.mark.parametrize(("systolic", "diastolic"), [(80, 120), (90, 90)])
def test_systolic_must_exceed_diastolic(systolic: int, diastolic: int) -> None:
    body = {
        "systolic_blood_pressure": {"value": systolic, "unit": "mmHg"},
        "diastolic_blood_pressure": {"value": diastolic, "unit": "mmHg"},
        "effective_time_frame": AT,
    }
    r = refused(dp("blood-pressure", "4.0", body), IMPLAUSIBLE_VALUE)
    assert "120" not in r.detail and "90" not in r.detail


def test_bounds_are_inclusive() -> None:
    for value in (20, 300):
        reading(dp(body=one("heart_rate", value, "beats/min")))


@pytest.mark.parametrize("statistic", sorted(DISPERSION_STATISTICS))
def test_dispersion_statistics_are_not_measurements(statistic: str) -> None:
    body = {"heart_rate": HR, "effective_time_frame": AT, "descriptive_statistic": statistic}
    refused(dp(body=body), UNSUPPORTED_TYPE)


# --- types and versions ---------------------------------------------------------------
@pytest.mark.parametrize(
    "schema_id",
    [
        {"namespace": "omh", "name": "sleep-duration", "version": "2.0"},
        {"namespace": "omh", "name": "heart-rate", "version": "3.0"},
        {"namespace": "omh", "name": "heart-rate", "version": "1.2"},
        {"namespace": "omh", "name": "heart-rate", "version": "2"},
        {"namespace": "omh", "name": "blood-pressure", "version": "3.2"},
        {"namespace": "ieee", "name": "heart-rate", "version": "2.0"},
        {"namespace": "granola", "name": "heart-rate", "version": "2.0"},
    ],
)
def test_unsupported_types_and_versions(schema_id: dict[str, str]) -> None:
    refused(dp(schema_id=schema_id), UNSUPPORTED_TYPE)


def test_a_broken_header_is_invalid_before_unsupported() -> None:
    sid = {"namespace": "omh", "name": "sleep-duration", "version": "2.0"}
    refused(dp(schema_id=sid, user_id=...), INVALID_SCHEMA)


def test_version_aware_validation() -> None:
    # body_posture exists from blood-pressure 2.0 on, position_during_measurement only in 1.0
    bp = {
        "systolic_blood_pressure": {"value": 120, "unit": "mmHg"},
        "diastolic_blood_pressure": {"value": 80, "unit": "mmHg"},
        "effective_time_frame": AT,
    }
    refused(dp("blood-pressure", "2.0", {**bp, "body_posture": "upside down"}), INVALID_SCHEMA)
    reading(dp("blood-pressure", "1.0", {**bp, "body_posture": "upside down"}))  # unknown in 1.0
    reading(dp("blood-pressure", "2.0", {**bp, "body_posture": "semi-recumbent"}))
    # IEEE time interval (4.0) has no date + part_of_day
    day = {"time_interval": {"date": "2024-02-29", "part_of_day": "morning"}}
    reading(dp("blood-pressure", "3.1", {**bp, "effective_time_frame": day}))
    refused(dp("blood-pressure", "4.0", {**bp, "effective_time_frame": day}), INVALID_SCHEMA)
    # the effective time frame became required in 2.0
    reading(dp("heart-rate", "1.0", {"heart_rate": HR}))
    refused(dp("heart-rate", "2.0", {"heart_rate": HR}), INVALID_SCHEMA)


# --- time ----------------------------------------------------------------------------
def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"date_time": "2024-03-01T12:30:00+02:00"}, utc(2024, 3, 1, 10, 30)),
        ({"date_time": "2024-03-01t10:30:00.123456789z"}, utc(2024, 3, 1, 10, 30, 0, 123456)),
        (
            interval(start_date_time="2024-03-01T06:00:00-05:00", end_date_time=T1),
            utc(2024, 3, 1, 11),
        ),
        (interval(start_date_time=T0, duration=uv(2, "h")), utc(2024, 3, 1, 10)),
        (interval(end_date_time=T1, duration=uv(90, "min")), utc(2024, 3, 1, 9, 30)),
        (interval(end_date_time=T1, duration=uv(1, "wk")), utc(2024, 2, 23, 11)),
        (interval(date="2024-02-29", part_of_day="night"), utc(2024, 2, 29, 0)),
        (interval(date="2024-02-29", part_of_day="morning"), utc(2024, 2, 29, 6)),
        (interval(date="2024-02-29", part_of_day="afternoon"), utc(2024, 2, 29, 12)),
        (interval(date="2024-02-29", part_of_day="evening"), utc(2024, 2, 29, 18)),
    ],
)
def test_effective_time(frame: dict[str, Any], expected: datetime) -> None:
    t = reading(
        dp(version="1.1", body={"heart_rate": HR, "effective_time_frame": frame})
    ).effective_time
    assert t == expected
    assert t.utcoffset() == timedelta(0)


def test_without_time_frame_the_creation_time_counts() -> None:
    r = reading(
        dp(version="1.0", body={"heart_rate": HR}, creation_date_time="2024-03-01T13:00:00+02:00")
    )
    assert r.effective_time == datetime(2024, 3, 1, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "frame",
    [
        {},
        {"date_time": T0, **interval(date="2024-03-01", part_of_day="night")},
        interval(),
        interval(start_date_time=T0),
        interval(duration=uv(1, "h")),
        interval(date="2024-03-01"),
        interval(date="2024-03-01", part_of_day="teatime"),
        interval(date="2024-02-30", part_of_day="night"),
        interval(date="1 March 2024", part_of_day="night"),
        interval(start_date_time=T0, end_date_time=T1, duration=uv(1, "h")),
        interval(start_date_time=T0, end_date_time=T1, date="2024-03-01", part_of_day="night"),
        interval(end_date_time=T1, duration=uv(1, "fortnight")),
        interval(end_date_time=T1, duration=uv("1", "h")),
        interval(end_date_time=T1, duration=uv(1e300, "yr")),
        {"date_time": "2024-03-01 10:00:00Z"},
        {"date_time": "2024-03-01T25:00:00Z"},
        {"date_time": "2024-03-01T10:00:00+24:00"},
        {"date_time": "0000-03-01T10:00:00Z"},
        {"date_time": "２０２４-03-01T10:00:00Z"},
        {"date_time": "2024-03-01T10:00:00Z\n"},
        {"date_time": "2024-W09-5T10:00:00Z"},
    ],
)
def test_bad_time_frames(frame: dict[str, Any]) -> None:
    refused(
        dp(version="1.1", body={"heart_rate": HR, "effective_time_frame": frame}), INVALID_SCHEMA
    )


def test_time_interval_requirements_of_step_count_and_geoposition() -> None:
    refused(dp("step-count", "2.0", {"step_count": 10, "effective_time_frame": AT}), INVALID_SCHEMA)
    geo = {"latitude": uv(60.17, "deg"), "longitude": uv(24.94, "deg")}
    frame = interval(start_date_time=T0, duration=uv(1, "h"))
    refused(dp("geoposition", "1.0", {**geo, "effective_time_frame": frame}), INVALID_SCHEMA)


def test_future_timestamps() -> None:
    def at(t: datetime) -> dict[str, Any]:
        return dp(body={"heart_rate": HR, "effective_time_frame": {"date_time": t.isoformat()}})

    reading(at(NOW + timedelta(minutes=4, seconds=59)))
    reading(at(NOW + timedelta(minutes=5)))
    r = refused(at(NOW + timedelta(minutes=5, seconds=1)), FUTURE_TIMESTAMP)
    assert r.id == "dp-1"
    refused(at(NOW + timedelta(days=400)), FUTURE_TIMESTAMP)

    # compared as instants, whatever the offset (NOW is 12:00Z)
    def frame(text: str) -> dict[str, Any]:
        return dp(body={"heart_rate": HR, "effective_time_frame": {"date_time": text}})

    reading(frame("2024-03-01T13:00:00+02:00"))  # 11:00Z
    refused(frame("2024-03-01T08:00:00-05:00"), FUTURE_TIMESTAMP)  # 13:00Z
    # the creation time counts where there is no time frame
    late = dp(version="1.0", body={"heart_rate": HR}, creation_date_time="2024-03-01T13:00:00Z")
    refused(late, FUTURE_TIMESTAMP)


# --- coordinates ---------------------------------------------------------------------------
def test_geoposition_sets_coordinates() -> None:
    geo = {"latitude": uv(60.17, "deg"), "longitude": uv(24.94, "deg"), "effective_time_frame": AT}
    r = reading(dp("geoposition", "1.0", geo))
    assert (r.latitude, r.longitude) == (60.17, 24.94)
    assert [(c.name, c.value, c.unit) for c in r.components] == [
        ("latitude", 60.17, "deg"),
        ("longitude", 24.94, "deg"),
    ]


@pytest.mark.parametrize(
    ("body_location", "provenance_location", "expected"),
    [
        ({"latitude": 60.17, "longitude": 24.94}, None, (60.17, 24.94)),
        ({"latitude": uv(60.17, "deg"), "longitude": uv(24.94, "deg")}, None, (60.17, 24.94)),
        (None, {"latitude": 60.17, "longitude": 24.94}, (60.17, 24.94)),
        ({"latitude": 1.0, "longitude": 2.0}, {"latitude": 3.0, "longitude": 4.0}, (1.0, 2.0)),
        ({"latitude": 60.17}, None, (None, None)),
        ({"latitude": 95.0, "longitude": 24.94}, None, (None, None)),
        ({"latitude": "60.17", "longitude": "24.94"}, None, (None, None)),
        ({"latitude": True, "longitude": False}, None, (None, None)),
        ({"latitude": float("nan"), "longitude": 1.0}, None, (None, None)),
        ({"latitude": 10**400, "longitude": 1.0}, None, (None, None)),
        ({"latitude": uv(1.0, "rad"), "longitude": 1.0}, None, (None, None)),
        ("Helsinki", None, (None, None)),
    ],
)
def test_coordinates_inside_other_readings(
    body_location: object, provenance_location: object, expected: tuple[float | None, float | None]
) -> None:
    body: dict[str, Any] = {"heart_rate": HR, "effective_time_frame": AT}
    if body_location is not None:
        body["location"] = body_location
    header: dict[str, Any] = {}
    if provenance_location is not None:
        header["acquisition_provenance"] = {"source_name": "phone", "location": provenance_location}
    r = reading(dp(body=body, **header))
    assert (r.latitude, r.longitude) == expected


# --- never raises --------------------------------------------------------------------------
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["omh", "heart-rate", "2.0", "1.0", "beats/min", "2024-03-01T10:00:00Z"])
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _check(result: object) -> None:
    assert isinstance(result, Reading | Refusal)
    if isinstance(result, Refusal):
        assert result.reason in REASONS
        assert result.detail != "data point could not be parsed"  # no internal error


@SETTINGS
@given(json_values)
def test_never_raises_on_arbitrary_json(obj: object) -> None:
    _check(parse(obj))


PATHS = [
    ("header",),
    ("header", "id"),
    ("header", "user_id"),
    ("header", "creation_date_time"),
    ("header", "schema_id"),
    ("header", "schema_id", "version"),
    ("body",),
    ("body", "heart_rate"),
    ("body", "heart_rate", "value"),
    ("body", "heart_rate", "unit"),
    ("body", "effective_time_frame"),
    ("body", "effective_time_frame", "date_time"),
    ("body", "descriptive_statistic"),
    ("body", "location"),
]


@SETTINGS
@given(st.sampled_from(PATHS), json_values)
def test_never_raises_on_a_damaged_data_point(path: tuple[str, ...], value: object) -> None:
    obj = copy.deepcopy(dp())  # never damage the shared HR / AT
    holder = obj
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    _check(parse(obj))


@SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_details_never_carry_the_value(value: float) -> None:
    r = parse(dp(body=one("heart_rate", value, "beats/min")))
    if isinstance(r, Refusal):
        assert r.reason == IMPLAUSIBLE_VALUE
        assert r.detail == "heart_rate outside the plausible range 20..300 /min"
    else:
        assert 20 <= value <= 300
        assert not math.isnan(r.components[0].value)


# Every string a data point carries is bounded: ids 256 characters, free text 4 KiB.
LONG = "x" * (2 << 20)  # 2 MB


def _with_provenance(**provenance: str) -> dict[str, Any]:
    return dp(acquisition_provenance={"source_name": "dev", **provenance})


@pytest.mark.parametrize(
    ("point", "field"),
    [
        (dp(id="x" * 257), "header.id"),
        (dp(user_id="x" * 257), "header.user_id"),
        (dp(id=LONG), "header.id"),
        (_with_provenance(source_name=LONG), "header.acquisition_provenance.source_name"),
        (_with_provenance(source_name="x" * 257), "header.acquisition_provenance.source_name"),
        (
            _with_provenance(source_data_point_id=LONG),
            "header.acquisition_provenance.source_data_point_id",
        ),
        (
            _with_provenance(source_creation_date_time="2024-03-01T10:00:00" + "0" * 100 + "Z"),
            "header.acquisition_provenance.source_creation_date_time",
        ),
        (
            dp(
                version="1.0",
                body={"heart_rate": HR, "effective_time_frame": AT, "user_notes": LONG},
            ),
            "body.user_notes",
        ),
        (
            dp(body={"heart_rate": HR, "effective_time_frame": {"date_time": LONG}}),
            "body.effective_time_frame.date_time",
        ),
        (
            dp(
                "step-count",
                "2.0",
                {
                    "step_count": 10,
                    "effective_time_frame": interval(start_date_time=T0, end_date_time=T1),
                    "descriptive_statistic_denominator": LONG,
                },
            ),
            "body.descriptive_statistic_denominator",
        ),
    ],
)
def test_every_string_is_bounded(point: dict[str, Any], field: str) -> None:
    r = refused(point, INVALID_SCHEMA)
    assert r.detail == f"{field}: too long"
    assert len(r.detail) < 200 and "xxxx" not in r.detail


def test_strings_up_to_their_bound_are_kept() -> None:
    point = _with_provenance(source_name="d" * 256, source_data_point_id="s" * 256)
    point["header"]["id"], point["header"]["user_id"] = "i" * 256, "u" * 256
    r = reading(point)
    assert (r.id, r.user_ref) == ("i" * 256, "u" * 256)
    notes = {"heart_rate": HR, "effective_time_frame": AT, "user_notes": "n" * 4096}
    reading(dp(version="1.0", body=notes))
