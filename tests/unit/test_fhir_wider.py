"""FHIR as real systems send it (contract v2, "FHIR input, wider"): Bundle
types and nested Bundles, LOINC or MDC codings (first known wins), the near
misses, refusals with a detail, urn:uuid subjects and entry ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import INVALID_SCHEMA, UNSUPPORTED_TYPE, Reading, Refusal, parse_fhir
from schemas.fhir import count_items
from schemas.fhir_codes import CODES, LOINC_SYSTEM, MDC_SYSTEM

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
WHEN = "2024-02-01T08:00:00+02:00"


def coding(system: str, code: str, display: str = "Some Name") -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def loinc(code: str) -> dict[str, str]:
    return coding(LOINC_SYSTEM, code)


def mdc(code: str) -> dict[str, str]:
    return coding(MDC_SYSTEM, code)


def qty(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": "http://unitsofmeasure.org", "code": code}


def obs(*codings: dict[str, str], **extra: Any) -> dict[str, Any]:
    o: dict[str, Any] = {
        "resourceType": "Observation",
        "id": extra.pop("id", "o-1"),
        "status": "final",
        "code": {"coding": list(codings), "text": "Narrative Name"},
        "subject": {"reference": "Patient/p-1", "display": "Jane Doe"},
        "effectiveDateTime": WHEN,
    }
    o.update(extra)
    return o


def one(o: object) -> Reading | Refusal:
    (r,) = parse_fhir(o, now=NOW)
    return r


def kind(o: object) -> str:
    r = one(o)
    return r.type if isinstance(r, Reading) else f"{r.reason}: {r.detail}"


@pytest.mark.parametrize(
    ("codings", "value", "expected"),
    [
        ([mdc("149530"), loinc("8867-4")], qty(61, "{beat}/min"), "heart-rate"),
        ([mdc("150456"), loinc("2708-6")], qty(97, "%"), "oxygen-saturation"),
        ([mdc("150364"), loinc("8310-5")], qty(36.6, "Cel"), "body-temperature"),
        ([mdc("160368")], qty(101, "mg/dL"), "blood-glucose"),
        ([loinc("8331-1")], qty(37.0, "Cel"), "body-temperature"),
        ([loinc("2345-7")], qty(90, "mg/dL"), "blood-glucose"),
        ([loinc("14749-6")], qty(5.5, "mmol/L"), "blood-glucose"),
        ([mdc("188736")], qty(70, "kg"), "body-weight"),
        ([mdc("151562")], qty(14, "/min"), "respiratory-rate"),
        ([loinc("55423-8")], qty(4000, "{steps}"), "step-count"),
        # unknown codings are skipped; the first known one decides
        (
            [coding("http://snomed.info/sct", "364075005"), loinc("8867-4")],
            qty(61, "/min"),
            "heart-rate",
        ),
    ],
)
def test_loinc_or_mdc_whichever_known_coding_comes_first(
    codings: list[dict[str, str]], value: dict[str, Any], expected: str
) -> None:
    assert kind(obs(*codings, valueQuantity=value)) == expected


def test_every_code_in_the_table_is_one_of_the_nine_types() -> None:
    from schemas import TYPES

    assert {t for t, _ in CODES.values()} <= set(TYPES)


def bp(panel: dict[str, str], sys_code: dict[str, str], dia_code: dict[str, str]) -> dict[str, Any]:
    return obs(
        panel,
        component=[
            {"code": {"coding": [sys_code]}, "valueQuantity": qty(120, "mm[Hg]")},
            {"code": {"coding": [dia_code]}, "valueQuantity": qty(80, "mm[Hg]")},
            {"code": {"coding": [mdc("150023")]}, "valueQuantity": qty(93, "mm[Hg]")},
        ],
    )


@pytest.mark.parametrize("panel", [loinc("85354-9"), loinc("55284-4"), mdc("150020")])
@pytest.mark.parametrize(
    ("sys_code", "dia_code"),
    [(loinc("8480-6"), loinc("8462-4")), (mdc("150021"), mdc("150022"))],
)
def test_blood_pressure_panels_and_components(
    panel: dict[str, str], sys_code: dict[str, str], dia_code: dict[str, str]
) -> None:
    r = one(bp(panel, sys_code, dia_code))
    assert isinstance(r, Reading) and r.type == "blood-pressure"
    assert [(c.name, c.value) for c in r.components] == [
        ("systolic_blood_pressure", 120),
        ("diastolic_blood_pressure", 80),
    ]


def test_near_misses_are_unsupported_with_a_reason() -> None:
    r = one(obs(loinc("96607-7"), valueQuantity=qty(1, "mm[Hg]")))
    assert isinstance(r, Refusal) and r.reason == UNSUPPORTED_TYPE and "96607-7" in r.detail
    r = one(obs(mdc("150320"), valueQuantity=qty(1, "%")))
    assert isinstance(r, Refusal) and r.reason == UNSUPPORTED_TYPE
    # a LOINC-looking code that is not one of ours
    r = one(obs(loinc("5087AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), valueQuantity=qty(60, "/min")))
    assert isinstance(r, Refusal) and r.reason == UNSUPPORTED_TYPE


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"status": "entered-in-error"}, "entered-in-error"),
        ({"status": "cancelled"}, "cancelled"),
        ({"dataAbsentReason": {"coding": [{"code": "unknown"}]}}, "dataAbsentReason"),
        ({"valueString": "92 mg/dL"}, "valueString"),
        ({"effectiveDateTime": None}, "effective"),
    ],
)
def test_refusals_are_invalid_schema_with_a_detail(change: dict[str, Any], says: str) -> None:
    o = obs(loinc("2339-0"))
    if "dataAbsentReason" not in change and "valueString" not in change:
        o["valueQuantity"] = qty(90, "mg/dL")
    for k, v in change.items():
        if v is None:
            del o[k]
        else:
            o[k] = v
    r = one(o)
    assert isinstance(r, Refusal) and r.reason == INVALID_SCHEMA, r
    assert says in r.detail
    assert "Jane" not in r.detail and "Narrative" not in r.detail


def test_a_component_with_data_absent_refuses_the_panel() -> None:
    o = bp(loinc("85354-9"), loinc("8480-6"), loinc("8462-4"))
    del o["component"][1]["valueQuantity"]
    o["component"][1]["dataAbsentReason"] = {"coding": [{"code": "unknown"}]}
    r = one(o)
    assert isinstance(r, Refusal) and r.reason == INVALID_SCHEMA
    assert "component.1.dataAbsentReason" in r.detail


def hr(rid: str) -> dict[str, Any]:
    return obs(loinc("8867-4"), id=rid, valueQuantity=qty(60, "/min"))


@pytest.mark.parametrize("bundle_type", ["transaction", "batch", "collection", "document", None])
def test_the_four_bundle_types_and_nested_bundles(bundle_type: str | None) -> None:
    inner = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": hr("b")}]}
    outer: dict[str, Any] = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "Composition", "text": {"div": "Jane Doe"}}},
            {"resource": hr("a")},
            {"resource": inner},
            {"resource": hr("c")},
        ],
    }
    if bundle_type:
        outer["type"] = bundle_type
    results = parse_fhir(outer, now=NOW)
    assert count_items(outer) == len(results) == 4
    first, *rest = results
    assert isinstance(first, Refusal) and first.reason == INVALID_SCHEMA and first.id is None
    assert "Jane" not in first.detail
    assert [r.id for r in rest] == ["a", "b", "c"]
    assert all(isinstance(r, Reading) for r in rest)


def test_other_bundle_types_and_deep_nesting_are_refused() -> None:
    searchset = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": hr("a")}]}
    (r,) = parse_fhir(searchset, now=NOW)
    assert isinstance(r, Refusal) and r.reason == INVALID_SCHEMA and "Bundle.type" in r.detail
    for odd in ([], {}, 7, "SEARCHSET"):
        weird = {"resourceType": "Bundle", "type": odd, "entry": [{"resource": hr("a")}]}
        assert count_items(weird) == len(parse_fhir(weird, now=NOW)) == 1
    deep: dict[str, Any] = hr("x")
    for _ in range(10):
        deep = {"resourceType": "Bundle", "entry": [{"resource": deep}]}
    (r,) = parse_fhir(deep, now=NOW)
    assert isinstance(r, Refusal) and "nested" in r.detail
    assert count_items(deep) == 1


def test_urn_uuid_subjects_and_entry_ids_in_a_transaction() -> None:
    patient_url = "urn:uuid:6dff1468-d6cf-804a-a3ed-a69896daf073"
    o = hr("unused")
    del o["id"]
    o["subject"] = {"reference": patient_url}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": {"resourceType": "Patient", "id": "pat-7", "name": [{"family": "Doe"}]},
            },
            {"fullUrl": "urn:uuid:11111111-2222-3333-4444-555555555555", "resource": o},
            {"fullUrl": "urn:oid:1.0.0.1", "resource": {**o}},
        ],
    }
    patient, a, b = parse_fhir(bundle, now=NOW)
    assert isinstance(patient, Refusal) and patient.id is None and "Doe" not in patient.detail
    assert isinstance(a, Reading) and isinstance(b, Reading)
    assert (a.user_ref, a.id) == ("pat-7", "urn:uuid:11111111-2222-3333-4444-555555555555")
    assert b.id == "urn:oid:1.0.0.1"


def test_the_readme_lists_every_accepted_code() -> None:
    from pathlib import Path

    from schemas.fhir_codes import BP_COMPONENTS, NOT_READINGS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for _, code in [*CODES, *BP_COMPONENTS, *NOT_READINGS]:
        assert code in readme, code


@pytest.mark.parametrize(
    "bundle",
    [
        {"resourceType": "Bundle", "entry": [None, 1, "x", {"resource": []}, {"resource": None}]},
        {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Bundle", "entry": 5}}]},
        {"resourceType": "Bundle", "entry": [{"fullUrl": ["x"], "resource": {"resourceType": 1}}]},
        {"resourceType": "Bundle", "type": None, "entry": []},
    ],
)
def test_odd_bundles_count_what_they_parse(bundle: dict[str, Any]) -> None:
    assert count_items(bundle) == len(parse_fhir(bundle, now=NOW))
