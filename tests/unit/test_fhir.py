"""parse_fhir on the five HL7 examples partners send (../shared/fhir), a
Bundle of them, and malformed resources."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import (
    FUTURE_TIMESTAMP,
    IMPLAUSIBLE_VALUE,
    INVALID_SCHEMA,
    UNSUPPORTED_TYPE,
    Reading,
    Refusal,
    parse_fhir,
)
from tests.support.shared_data import shared_path

DATA = shared_path("fhir")
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"observation-example-{name}.json").read_text())
    return data


def one(obj: object) -> Reading | Refusal:
    (result,) = parse_fhir(obj, now=NOW)
    return result


def reading(obj: object) -> Reading:
    result = one(obj)
    assert isinstance(result, Reading), result
    return result


def refused(obj: object, reason: str) -> Refusal:
    result = one(obj)
    assert isinstance(result, Refusal), result
    assert result.reason == reason, result
    return result


def summary(r: Reading) -> list[tuple[str, float, str, float, str]]:
    return [(c.name, c.value, c.unit, c.orig_value, c.orig_unit) for c in r.components]


def test_heart_rate() -> None:
    r = reading(load("heart-rate"))
    assert (r.type, r.id, r.user_ref) == ("heart-rate", "heart-rate", "example")
    assert r.effective_time == datetime(1999, 7, 2, tzinfo=UTC)  # date only: midnight UTC
    assert summary(r) == [("heart_rate", 44.0, "/min", 44.0, "/min")]


def test_blood_pressure_panel() -> None:
    r = reading(load("bloodpressure"))
    assert r.type == "blood-pressure"
    assert r.id == "urn:uuid:187e0c12-8dd2-67e2-99b2-bf273c878281"  # identifier before id
    assert r.user_ref == "example"
    assert r.effective_time == datetime(2012, 9, 17, tzinfo=UTC)
    assert summary(r) == [
        ("systolic_blood_pressure", 107.0, "mm[Hg]", 107.0, "mm[Hg]"),
        ("diastolic_blood_pressure", 60.0, "mm[Hg]", 60.0, "mm[Hg]"),
    ]


def test_glucose_in_mmol_per_l() -> None:
    r = reading(load("f001-glucose"))
    assert (r.type, r.id, r.user_ref) == ("blood-glucose", "6323", "f001")
    assert r.effective_time == datetime(2013, 4, 2, 8, 30, 10, tzinfo=UTC)  # effectivePeriod.start
    ((name, value, unit, orig, orig_unit),) = summary(r)
    assert (name, unit, orig, orig_unit) == ("blood_glucose", "mg/dL", 6.3, "mmol/L")
    assert value == pytest.approx(6.3 * 18.0156)


def test_body_temperature() -> None:
    r = reading(load("body-temperature"))
    assert (r.type, r.id, r.user_ref) == ("body-temperature", "body-temperature", "example")
    assert r.effective_time == datetime(1999, 7, 2, tzinfo=UTC)
    assert summary(r) == [("body_temperature", 36.5, "Cel", 36.5, "Cel")]


def test_oxygen_saturation_with_two_loinc_codings() -> None:
    r = reading(load("satO2"))
    assert (r.type, r.id, r.user_ref) == ("oxygen-saturation", "o1223435-10", "example")
    assert r.effective_time == datetime(2014, 12, 5, 8, 30, 10, tzinfo=UTC)
    assert r.effective_time.utcoffset() == timedelta(0)
    assert summary(r) == [("oxygen_saturation", 95.0, "%", 95.0, "%")]


def test_a_bundle_of_all_five() -> None:
    names = ["heart-rate", "bloodpressure", "f001-glucose", "body-temperature", "satO2"]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:x:{n}", "resource": load(n)} for n in names],
    }
    results = parse_fhir(bundle, now=NOW)
    assert [type(r) for r in results] == [Reading] * 5
    assert [r.type for r in results if isinstance(r, Reading)] == [
        "heart-rate",
        "blood-pressure",
        "blood-glucose",
        "body-temperature",
        "oxygen-saturation",
    ]


def test_bundle_entries_are_judged_one_by_one() -> None:
    patient = {"resourceType": "Patient", "id": "example", "name": [{"family": "Chalmers"}]}
    bundle = {
        "resourceType": "Bundle",
        "entry": [{"resource": load("heart-rate")}, {"resource": patient}, {"request": {}}, 7],
    }
    results = parse_fhir(bundle, now=NOW)
    assert isinstance(results[0], Reading)
    assert [r.reason for r in results[1:] if isinstance(r, Refusal)] == [INVALID_SCHEMA] * 3
    assert parse_fhir({"resourceType": "Bundle"}, now=NOW) == []
    (bad,) = parse_fhir({"resourceType": "Bundle", "entry": {"resource": {}}}, now=NOW)
    assert isinstance(bad, Refusal) and bad.reason == INVALID_SCHEMA


def test_display_names_and_narrative_are_never_kept() -> None:
    obs = load("f001-glucose")
    assert obs["subject"]["display"] == "P. van de Heuvel"
    results = [one(obs), one(load("heart-rate"))]
    text = repr(results)
    for secret in ("P. van de Heuvel", "Heuvel", "A. Langeveld", "Glucose [Moles/volume]", "<div"):
        assert secret not in text
    bundle = {"resourceType": "Bundle", "entry": [{"resource": obs}]}
    assert "Heuvel" not in repr(parse_fhir(bundle, now=NOW))
    # nor does a refusal echo them
    broken = copy.deepcopy(obs)
    broken["valueQuantity"]["value"] = "P. van de Heuvel"
    assert "Heuvel" not in repr(one(broken))


@pytest.mark.parametrize(
    ("reference", "user_ref"),
    [
        ("Patient/abc", "abc"),
        ("https://fhir.example.org/r4/Patient/abc-1.2", "abc-1.2"),
        ("Patient/abc/_history/3", "abc"),
    ],
)
def test_user_ref_is_the_patient_id(reference: str, user_ref: str) -> None:
    obs = load("heart-rate")
    obs["subject"] = {"reference": reference, "display": "Someone"}
    assert reading(obs).user_ref == user_ref


@pytest.mark.parametrize(
    "subject",
    [
        None,
        {},
        {"display": "Someone"},
        {"reference": "Group/abc"},
        {"reference": "abc"},
        {"reference": "Patient/"},
        {"reference": "Patient/a b"},
        {"reference": 5},
        "Patient/abc",
    ],
)
def test_bad_subjects(subject: object) -> None:
    obs = load("heart-rate")
    if subject is None:
        del obs["subject"]
    else:
        obs["subject"] = subject
    assert refused(obs, INVALID_SCHEMA).detail.startswith("Observation.subject")


def test_reading_id_falls_back_to_observation_id() -> None:
    obs = load("satO2")
    obs["identifier"] = [{"system": "urn:x"}, {"value": ""}]
    assert reading(obs).id == "satO2"
    del obs["id"]
    refused(obs, INVALID_SCHEMA)


def test_unknown_codes_are_unsupported() -> None:
    obs = load("heart-rate")
    obs["code"] = {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}  # body height
    assert refused(obs, UNSUPPORTED_TYPE).id == "heart-rate"
    obs["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "364075005"}]}
    refused(obs, UNSUPPORTED_TYPE)
    obs["code"] = {"text": "Heart rate"}
    refused(obs, UNSUPPORTED_TYPE)


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "id": "example"},
        {"resourceType": "observation"},
        {"id": "x"},
        None,
        [],
        "Observation",
        42,
    ],
)
def test_non_observations(resource: object) -> None:
    refused(resource, INVALID_SCHEMA)


def test_units() -> None:
    obs = load("f001-glucose")
    obs["valueQuantity"] = {"value": 99, "unit": "mg/dL"}  # no UCUM code: .unit
    assert summary(reading(obs)) == [("blood_glucose", 99.0, "mg/dL", 99.0, "mg/dL")]
    obs["valueQuantity"] = {"value": 6.3, "code": "mmol/L", "system": "http://unitsofmeasure.org"}
    assert reading(obs).components[0].value == pytest.approx(113.49828)
    obs["valueQuantity"] = {"value": 6.3, "code": "mol/m3", "system": "http://unitsofmeasure.org"}
    assert "unit not accepted" in refused(obs, INVALID_SCHEMA).detail
    obs["valueQuantity"] = {"value": 6.3}
    refused(obs, INVALID_SCHEMA)
    temp = load("body-temperature")
    temp["valueQuantity"] = {"value": 98.6, "code": "[degF]", "system": "http://unitsofmeasure.org"}
    assert reading(temp).components[0].value == pytest.approx(37.0)
    weight = load("heart-rate")
    weight["code"] = {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}
    weight["valueQuantity"] = {"value": 154.3, "code": "[lb_av]", "unit": "lb"}
    c = reading(weight).components[0]
    assert (c.name, c.unit, c.orig_unit) == ("body_weight", "kg", "[lb_av]")
    assert c.value == pytest.approx(154.3 * 0.45359237)
    bp = load("bloodpressure")
    for part, kpa in zip(bp["component"], (16, 8), strict=True):
        part["valueQuantity"] = {"value": kpa, "code": "kPa"}
    assert [c.value for c in reading(bp).components] == pytest.approx([120.00992, 60.00496])


def test_values() -> None:
    obs = load("heart-rate")
    for bad in ("44", None, True, float("nan"), float("inf"), 10**400):
        obs["valueQuantity"]["value"] = bad
        refused(obs, INVALID_SCHEMA)
    obs["valueQuantity"]["value"] = 400
    assert (
        refused(obs, IMPLAUSIBLE_VALUE).detail
        == "heart_rate outside the plausible range 20..300 /min"
    )
    del obs["valueQuantity"]
    refused(obs, INVALID_SCHEMA)


def test_blood_pressure_needs_both_components() -> None:
    bp = load("bloodpressure")
    bp["component"] = bp["component"][:1]
    assert "8462-4" in refused(bp, INVALID_SCHEMA).detail
    bp = load("bloodpressure")
    bp["component"][0]["valueQuantity"]["value"] = 50  # systolic below diastolic
    refused(bp, IMPLAUSIBLE_VALUE)


@pytest.mark.parametrize(
    ("effective", "expected"),
    [
        ({"effectiveDateTime": "2024-02-29"}, datetime(2024, 2, 29, tzinfo=UTC)),
        ({"effectiveDateTime": "2024-02-29T10:00:00+02:00"}, datetime(2024, 2, 29, 8, tzinfo=UTC)),
        (
            {"effectiveDateTime": "2024-02-29T10:00:00.5Z"},
            datetime(2024, 2, 29, 10, 0, 0, 500000, tzinfo=UTC),
        ),
        (
            {"effectivePeriod": {"start": "2024-02-28", "end": "2024-02-29"}},
            datetime(2024, 2, 28, tzinfo=UTC),
        ),
    ],
)
def test_effective_time(effective: dict[str, Any], expected: datetime) -> None:
    obs = load("heart-rate")
    del obs["effectiveDateTime"]
    obs.update(effective)
    assert reading(obs).effective_time == expected


@pytest.mark.parametrize(
    "effective",
    [
        {},
        {"effectiveDateTime": "2024"},
        {"effectiveDateTime": "2024-02"},
        {"effectiveDateTime": "2024-02-30"},
        {"effectiveDateTime": "2024-02-29T10:00:00"},
        {"effectiveDateTime": "2024-02-29T10:00Z"},
        {"effectiveDateTime": 1709200000},
        {"effectivePeriod": {"end": "2024-02-29"}},
        {"effectiveInstant": "2024-02-29T10:00:00Z"},
    ],
)
def test_bad_effective_times(effective: dict[str, Any]) -> None:
    obs = load("heart-rate")
    del obs["effectiveDateTime"]
    obs.update(effective)
    refused(obs, INVALID_SCHEMA)


def test_future_observations() -> None:
    obs = load("satO2")
    obs["effectiveDateTime"] = (NOW + timedelta(hours=1)).isoformat()
    refused(obs, FUTURE_TIMESTAMP)
    obs["effectiveDateTime"] = (NOW + timedelta(minutes=4)).isoformat()
    reading(obs)


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_withdrawn_observations(status: str) -> None:
    obs = load("heart-rate")
    obs["status"] = status
    refused(obs, INVALID_SCHEMA)


def test_never_raises_on_damaged_observations() -> None:
    base = load("bloodpressure")
    hostile: list[object] = [
        None,
        True,
        1e308,
        float("nan"),
        10**400,
        "x" * 100_000,
        [],
        {},
        [[[]]],
    ]
    for key in list(base):
        for value in hostile:
            obs = copy.deepcopy(base)
            obs[key] = value
            for result in parse_fhir(obs, now=NOW):
                assert isinstance(result, Reading | Refusal)
                if isinstance(result, Refusal):
                    assert "could not be parsed" not in result.detail


LONG = "x" * (2 << 20)  # 2 MB


def _long_identifier(obs: dict[str, Any]) -> None:
    obs["identifier"] = [{"system": "urn:x", "value": LONG}]


def _long_reference(obs: dict[str, Any]) -> None:
    obs["subject"] = {"reference": "Patient/" + LONG}


def _long_id(obs: dict[str, Any]) -> None:
    obs["id"] = "x" * 257


def _long_code(obs: dict[str, Any]) -> None:
    obs["code"]["coding"][0]["code"] = LONG


def _long_unit(obs: dict[str, Any]) -> None:
    obs["valueQuantity"]["unit"] = LONG


def _long_time(obs: dict[str, Any]) -> None:
    obs["effectiveDateTime"] = LONG


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (_long_identifier, "Observation.identifier.0.value"),
        (_long_reference, "Observation.subject.reference"),
        (_long_id, "Observation.id"),
        (_long_code, "Observation.code.coding.0.code"),
        (_long_unit, "Observation.valueQuantity.unit"),
        (_long_time, "Observation.effectiveDateTime"),
    ],
)
def test_every_string_is_bounded(damage: Any, field: str) -> None:
    obs = load("heart-rate")
    obs.pop("effectivePeriod", None)
    damage(obs)
    r = refused(obs, INVALID_SCHEMA)
    assert r.detail == f"{field}: too long"


def test_identifier_of_256_is_kept() -> None:
    obs = load("heart-rate")
    obs["identifier"] = [{"value": "i" * 256}]
    assert reading(obs).id == "i" * 256
