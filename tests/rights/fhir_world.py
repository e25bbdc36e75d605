"""One person for the FHIR access extract tests (rights, CLI, API): readings of
all nine types (one with coordinates, one erroneous, one sent in pounds),
consents (one withdrawn), objections (one lifted, one for a partner) and a
disclosure to a partner; and the checks every form of the extract must pass."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from fhir.resources.R4B.bundle import Bundle

from flows.disclosure import run_disclosure
from rights import correction
from schemas.reading import TYPES, Component, Reading
from store import objections, partners, registry
from store.writer import Writer
from tests.support import seed

USER_REF = "user-ref-fhir-7q2mzx"
PROVIDER_NAME = "Acme Wearables Provider Oy"
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@dataclass
class Person:
    provider: str
    subject: str
    consents: dict[str, str]  # purpose -> consent id
    withdrawn: str
    partner: str
    disclosure: str
    objections: dict[str, str]  # "lifted" | "partner" -> objection id


def _readings() -> list[Reading]:
    def one(rid: str, type_: str, *parts: tuple[str, float, str], **kw: Any) -> Reading:
        comps = tuple(Component(name, v, unit, v, unit) for name, v, unit in parts)
        return Reading(rid, USER_REF, type_, NOW + timedelta(minutes=len(rid)), comps, **kw)

    lb = 154.0
    return [
        one("hr-1", "heart-rate", ("heart_rate", 64.0, "/min"), latitude=60.17, longitude=24.94),
        one("hr-22", "heart-rate", ("heart_rate", 71.0, "/min")),
        one(
            "bp-333",
            "blood-pressure",
            ("systolic_blood_pressure", 121.0, "mm[Hg]"),
            ("diastolic_blood_pressure", 79.0, "mm[Hg]"),
        ),
        one("bg-4444", "blood-glucose", ("blood_glucose", 95.0, "mg/dL")),
        Reading(
            "bw-55555",
            USER_REF,
            "body-weight",
            NOW,
            (Component("body_weight", lb * 0.45359237, "kg", lb, "lb"),),
        ),
        one("bt-6", "body-temperature", ("body_temperature", 36.6, "Cel")),
        one("os-77", "oxygen-saturation", ("oxygen_saturation", 97.0, "%")),
        one("rr-888", "respiratory-rate", ("respiratory_rate", 14.0, "/min")),
        one("sc-9999", "step-count", ("step_count", 4200.0, "{steps}")),
        one("geo-1", "geoposition", ("latitude", 60.17, "deg"), ("longitude", 24.94, "deg")),
    ]


def build_person(
    conn: psycopg.Connection, master: bytes, writer: Writer, db_url: str, export_dir: Path
) -> Person:
    pid = seed.provider(conn, master, TYPES, name=PROVIDER_NAME)["provider_id"]
    sid = seed.subject(conn, pid, USER_REF, residency="EU")
    consents = {
        "collection": seed.consent(conn, sid, provider_id=pid, types=list(TYPES)),
        "location": seed.consent(conn, sid, "location", provider_id=pid),
        "marketing": seed.consent(
            conn,
            sid,
            "marketing",
            valid_from=NOW - timedelta(days=1),
            valid_until=NOW + timedelta(days=30),
        ),
    }
    withdrawn = seed.consent(conn, sid, "analytics")
    registry.withdraw_consent(conn, withdrawn, "test")
    conn.commit()
    out = writer.write([(pid, r) for r in _readings()], "test")
    assert [o.status for o in out] == ["accepted"] * len(out), out
    correction.correct_reading(conn, sid, pid, "hr-22", "test", action="erroneous")
    partner = partners.add_partner(
        conn, "Insight Partner", "EU", ["disclosure"], ["heart-rate"], "test"
    )
    other = partners.add_partner(
        conn, "Other Partner", "EU", ["disclosure"], ["heart-rate"], "test"
    )
    conn.commit()
    disclosure = run_disclosure(db_url, master, export_dir, partner["partner_id"])
    lifted = objections.add_objection(conn, master, sid, "marketing", "test")["objection_id"]
    objections.lift_objection(conn, lifted, "test")
    to_partner = objections.add_objection(
        conn, master, sid, "disclosure", "test", partner_id=other["partner_id"]
    )["objection_id"]
    conn.commit()
    return Person(
        provider=pid,
        subject=sid,
        consents=consents,
        withdrawn=withdrawn,
        partner=partner["partner_id"],
        disclosure=disclosure["disclosure_id"],
        objections={"lifted": lifted, "partner": to_partner},
    )


def resources(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == kind]


def check_bundle(
    raw: bytes, doc: dict[str, Any], person: Person, json_extract: dict[str, Any]
) -> None:
    """Every check of the FHIR extract of `build_person`'s subject."""
    Bundle.model_validate(doc)  # the whole Bundle, every resource, against the R4(B) models
    assert (doc["resourceType"], doc["type"]) == ("Bundle", "collection")
    for needle in (USER_REF, PROVIDER_NAME):
        assert needle.encode() not in raw
    urls = [e["fullUrl"] for e in doc["entry"]]
    assert len(urls) == len(set(urls))

    (patient,) = resources(doc, "Patient")
    assert set(patient) == {"resourceType", "id", "identifier", "extension"}
    assert patient["id"] == person.subject
    assert doc["entry"][0]["fullUrl"] == f"urn:uuid:{person.subject}"
    residency = [e for e in patient["extension"] if e["url"].endswith("/residency")]
    assert residency == [{"url": residency[0]["url"], "valueCode": "EU"}]
    disclosed = [e for e in patient["extension"] if e["url"].endswith("/partner-disclosure")]
    assert len(disclosed) == len(json_extract["partner_disclosures"]) == 1
    parts = {p["url"]: p for p in disclosed[0]["extension"]}
    assert parts["disclosureId"]["valueString"] == person.disclosure
    assert parts["partner"]["valueReference"]["identifier"]["value"] == f"urn:uuid:{person.partner}"
    assert parts["rows"]["valueInteger"] == json_extract["partner_disclosures"][0]["rows"]

    # consents: one per consent, the withdrawn one inactive; objections deny
    consents = resources(doc, "Consent")
    assert len(consents) == len(json_extract["consents"]) + len(json_extract["objections"])
    by_id = {c["identifier"][0]["value"].removeprefix("urn:uuid:"): c for c in consents}
    for purpose, cid in person.consents.items():
        c = by_id[cid]
        assert c["status"] == "active" and c["provision"]["type"] == "permit"
        assert {"system": c["provision"]["purpose"][0]["system"], "code": purpose} in [
            {"system": p["system"], "code": p["code"]} for p in c["provision"]["purpose"]
        ]
        assert c["patient"]["reference"] == f"urn:uuid:{person.subject}"
    assert by_id[person.withdrawn]["status"] == "inactive"
    assert by_id[person.withdrawn]["extension"][0]["valueDateTime"]
    collection = by_id[person.consents["collection"]]["provision"]
    assert len(collection["code"]) == 9
    assert (
        collection["actor"][0]["reference"]["identifier"]["value"] == f"urn:uuid:{person.provider}"
    )
    assert set(by_id[person.consents["marketing"]]["provision"]["period"]) == {"start", "end"}
    lifted, to_partner = by_id[person.objections["lifted"]], by_id[person.objections["partner"]]
    assert (lifted["status"], lifted["provision"]["type"]) == ("inactive", "deny")
    assert (to_partner["status"], to_partner["provision"]["type"]) == ("active", "deny")
    assert to_partner["provision"]["purpose"][0]["code"] == "disclosure"
    assert "actor" in to_partner["provision"] and "actor" not in lifted["provision"]

    # observations: one per reading, all rows of the JSON extract
    observations = resources(doc, "Observation")
    readings = json_extract["readings"]
    assert len(observations) == len({(r["provider_id"], r["reading_id"]) for r in readings}) == 10
    components = sum(len(o.get("component", [])) or 1 for o in observations)
    assert components == len(readings) == 12
    by_rid = {o["identifier"][0]["value"]: o for o in observations}
    assert {o["identifier"][0]["system"] for o in observations} == {f"urn:uuid:{person.provider}"}
    codes = {
        rid: [c["code"] for c in o["code"]["coding"] if c["system"] == LOINC]
        for rid, o in by_rid.items()
    }
    assert codes == {
        "hr-1": ["8867-4"],
        "hr-22": ["8867-4"],
        "bp-333": ["85354-9"],
        "bg-4444": ["2339-0"],
        "bw-55555": ["29463-7"],
        "bt-6": ["8310-5"],
        "os-77": ["2708-6", "59408-5"],
        "rr-888": ["9279-1"],
        "sc-9999": ["41950-7"],
        "geo-1": [],
    }
    bp = by_rid["bp-333"]
    assert "valueQuantity" not in bp
    assert [
        ([c["code"] for c in comp["code"]["coding"] if c["system"] == LOINC], comp["valueQuantity"])
        for comp in bp["component"]
    ] == [
        (["8462-4"], {"value": 79.0, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}),
        (["8480-6"], {"value": 121.0, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}),
    ]
    for rid, o in by_rid.items():
        assert o["subject"] == {"reference": f"urn:uuid:{person.subject}"}
        assert o["effectiveDateTime"].endswith("Z")
        for q in [o.get("valueQuantity")] + [c["valueQuantity"] for c in o.get("component", [])]:
            if q is not None:
                assert q["system"] == UCUM and q["code"] == q["unit"]
        assert o["status"] == ("entered-in-error" if rid == "hr-22" else "final")
        # coordinates: the geoposition's components, and the one reading that carried them
        assert ("extension" in o) == (rid == "hr-1")
    assert [c["valueQuantity"]["value"] for c in by_rid["geo-1"]["component"]] == [60.17, 24.94]
    assert by_rid["bw-55555"]["valueQuantity"]["extension"][0]["valueQuantity"] == {
        "value": 154.0,
        "unit": "lb",
    }
