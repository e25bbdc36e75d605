"""FHIR R4 Observations and Bundles through the webhook (real examples from the spec)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import seed
from tests.support.http import Api, World, count
from tests.support.shared_data import shared_path


# The module's tests share one database and one server (tests.support.http),
# each test isolated by its own provider.
@pytest.fixture(scope="module")
def api(shared_api: Api) -> Api:
    return shared_api


@pytest.fixture
def conn(shared_conn: psycopg.Connection) -> psycopg.Connection:
    return shared_conn


FHIR_DIR = shared_path("fhir")
FILES = sorted(FHIR_DIR.glob("*.json"))
FHIR = "application/fhir+json"


@pytest.fixture
def world(conn: psycopg.Connection, master_key: bytes) -> World:
    """One provider; the examples' patients `example` and `f001` are its subjects."""
    p = seed.provider(conn, master_key)
    subjects = {}
    for ref in ("example", "f001"):
        sid = seed.subject(conn, p["provider_id"], ref)
        seed.consent(conn, sid, "collection")
        subjects[ref] = sid
    return World(p["provider_id"], p["webhook_secret"], "example", subjects["example"])


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def test_the_examples_are_present() -> None:
    assert len(FILES) >= 5, f"expected the FHIR examples in {FHIR_DIR}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_example_observation_is_accepted(
    api: Api, world: World, conn: psycopg.Connection, path: Path
) -> None:
    obs = _load(path)
    r = api.post_readings(world, obs, content_type=FHIR)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1, body
    expected_id = (obs.get("identifier") or [{}])[0].get("value") or obs["id"]
    assert body["results"][0]["id"] == expected_id
    assert count(conn, "readings", "reading_id = %s", (expected_id,)) >= 1


def test_a_bundle_is_answered_in_entry_order_and_resends_are_duplicates(
    api: Api, world: World, conn: psycopg.Connection
) -> None:
    observations = [_load(p) for p in FILES]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{i}", "resource": o} for i, o in enumerate(observations)],
    }
    first = api.post_readings(world, bundle, content_type=FHIR).json()
    assert first["accepted"] == len(observations)
    ids = [(o.get("identifier") or [{}])[0].get("value") or o["id"] for o in observations]
    assert [x["id"] for x in first["results"]] == ids
    again = api.post_readings(world, bundle, content_type=FHIR).json()
    assert again["duplicates"] == len(observations)
    # Blood pressure became two components in canonical UCUM units.
    rows = conn.execute(
        "SELECT component, unit FROM readings WHERE type = 'blood-pressure' "
        "AND provider_id = %s ORDER BY component",
        (world.provider_id,),
    ).fetchall()
    assert [r[0] for r in rows] == ["diastolic_blood_pressure", "systolic_blood_pressure"]
    assert {r[1] for r in rows} == {"mm[Hg]"}


def test_names_and_narrative_are_never_stored(
    api: Api, world: World, conn: psycopg.Connection
) -> None:
    for path in FILES:
        api.post_readings(world, _load(path), content_type=FHIR)
    conn.rollback()
    dump = " ".join(
        str(row)
        for table in ("readings", "rejections", "audit_log")
        for row in conn.execute(f"SELECT * FROM {table}").fetchall()
    )
    for name in ("P. van de Heuvel", "A. Langeveld", "Heart rate", "Body temperature"):
        assert name not in dump


def test_fhir_refusals_use_the_contract_reason_codes(api: Api, world: World) -> None:
    hr = _load(FHIR_DIR / "observation-example-heart-rate.json")
    unknown_patient = {**hr, "id": "hr-x", "subject": {"reference": "Patient/nobody"}}
    implausible = {**hr, "id": "hr-y", "valueQuantity": {**hr["valueQuantity"], "value": 900}}
    unsupported = {
        **hr,
        "id": "hr-z",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
    }
    not_observation = {"resourceType": "Patient", "id": "p"}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": x} for x in (unknown_patient, implausible, unsupported, not_observation)
        ],
    }
    r = api.post_readings(world, bundle, content_type=FHIR)
    assert r.status_code == 200, r.text
    reasons = [x["reason"] for x in r.json()["results"]]
    assert reasons[:3] == ["unknown_subject", "implausible_value", "unsupported_type"]
    assert reasons[3] in ("invalid_schema", "unsupported_type")


def test_fhir_sent_as_plain_json_is_recognised(api: Api, world: World) -> None:
    obs = _load(FHIR_DIR / "observation-example-heart-rate.json")
    r = api.post_readings(world, obs, content_type="application/json")
    assert r.status_code == 200 and r.json()["accepted"] == 1
