"""The access extract as a FHIR R4 ``Bundle`` (type ``collection``).

The same data as the JSON extract (`rights.extract`), in the form other
health software reads: the subject as a ``Patient`` carrying only its id,
every reading as an ``Observation`` (LOINC code, UCUM quantities), every
consent and every objection as a ``Consent``, the partner disclosures as an
extension of the ``Patient``. The mapping is the README's "Access extract as
FHIR" table. Links (the providers' user refs), groups, rejections and exports
stay in the JSON extract only: they are not health data of the person.

Readings are streamed (one entry written per reading, bounded memory), like
the JSON extract. Everything but the readings is built here as plain dicts:
the module needs no FHIR library (the tests validate its output with one).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any, Final

from core.errors import NotFound
from rights.encode import dumps
from store import disclosures, objections, registry
from store import rights as queries
from store.db import Connection, translate_errors

# Project-defined names (not resolvable URLs; `.example` is reserved for that).
BASE: Final = "https://vitals.example/fhir"
READING_TYPE_SYSTEM: Final = f"{BASE}/CodeSystem/reading-type"
COMPONENT_SYSTEM: Final = f"{BASE}/CodeSystem/component"
PURPOSE_SYSTEM: Final = f"{BASE}/CodeSystem/purpose"
RECORD_SYSTEM: Final = f"{BASE}/CodeSystem/record"  # consent | objection
EXT_RESIDENCY: Final = f"{BASE}/StructureDefinition/residency"
EXT_DISCLOSURE: Final = f"{BASE}/StructureDefinition/partner-disclosure"
EXT_LOCATION: Final = f"{BASE}/StructureDefinition/location"
EXT_ORIGINAL: Final = f"{BASE}/StructureDefinition/original-quantity"
EXT_ENDED: Final = f"{BASE}/StructureDefinition/ended"  # withdrawn / lifted at

LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
URI: Final = "urn:ietf:rfc:3986"
OBS_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
CONSENT_SCOPE: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

BP_PANEL: Final = "85354-9"
# type -> LOINC codings of Observation.code (the first is the one our own FHIR
# input reads back); geoposition has no LOINC code: only the project's code.
TYPE_LOINC: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "heart-rate": (("8867-4", "Heart rate"),),
    "blood-pressure": ((BP_PANEL, "Blood pressure panel with all children optional"),),
    "blood-glucose": (("2339-0", "Glucose [Mass/volume] in Blood"),),
    "body-weight": (("29463-7", "Body weight"),),
    "body-temperature": (("8310-5", "Body temperature"),),
    "oxygen-saturation": (
        ("2708-6", "Oxygen saturation in Arterial blood"),
        ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
    ),
    "respiratory-rate": (("9279-1", "Respiratory rate"),),
    "step-count": (("41950-7", "Number of steps in 24 hour Measured"),),
    "geoposition": (),
}
# Components of the multi-valued types: component -> LOINC code (or None).
COMPONENT_LOINC: Final[dict[str, tuple[str, str] | None]] = {
    "systolic_blood_pressure": ("8480-6", "Systolic blood pressure"),
    "diastolic_blood_pressure": ("8462-4", "Diastolic blood pressure"),
    "latitude": None,
    "longitude": None,
}
CATEGORY: Final = {"step-count": "activity", "geoposition": None}  # else vital-signs
# Purposes with an equivalent in HL7 v3 PurposeOfUse (v3-ActReason).
PURPOSE_OF_USE: Final = {
    "research": ("HRESCH", "healthcare research"),
    "marketing": ("HMARKT", "healthcare marketing"),
}
_READING_NS: Final = uuid.UUID("5d1c3a52-6b7e-4c0f-9f43-6f3a1d0c9e21")


def write_fhir_extract(
    conn: Connection, subject_id: str, out: IO[bytes], actor: str
) -> dict[str, int]:
    """Write the subject's access extract as one FHIR R4 Bundle (JSON).

    Streams readings (one Observation per reading); returns counts, the
    JSON extract's for the same sections (`readings` counts stored rows, one
    per component) plus `observations`. Audited as a read of personal data,
    like the JSON extract; commits on `conn`.
    """
    sid = registry.parse_uuid(subject_id, "subject")
    with translate_errors():
        subject = queries.extract_subject(conn, sid)
        if subject is None:
            raise NotFound("subject", subject_id)
        consents = registry.consent_history(conn, sid)
        objected = objections.extract_rows(conn, sid)
        disclosed = disclosures.extract_rows(conn, sid)
        patient_ref = f"urn:uuid:{sid}"
        out.write(
            b'{"resourceType":"Bundle","type":"collection","timestamp":'
            + dumps(datetime.now(UTC))
            + b',"entry":['
        )
        out.write(_entry(patient_ref, patient(subject, disclosed)))
        for row in consents:
            out.write(b"," + _entry(f"urn:uuid:{row['consent_id']}", consent(row, patient_ref)))
        for row in objected:
            url = f"urn:uuid:{row['objection_id']}"
            out.write(b"," + _entry(url, objection(row, patient_ref)))
        rows = observations = 0
        for group in _by_reading(queries.stream_readings(conn, sid, by_reading=True)):
            url, resource = observation(group, patient_ref)
            out.write(b"," + _entry(url, resource))
            rows += len(group)
            observations += 1
        out.write(b"]}\n")
        counts = {
            "consents": len(consents),
            "objections": len(objected),
            "partner_disclosures": len(disclosed),
            "readings": rows,
            "observations": observations,
        }
        registry.audit(conn, actor, "subject.extract", sid, format="fhir", counts=counts)
        conn.commit()
    return counts


def _entry(full_url: str, resource: dict[str, Any]) -> bytes:
    return dumps({"fullUrl": full_url, "resource": resource})


def _by_reading(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive rows of one reading (the query orders them so)."""
    group: list[dict[str, Any]] = []
    key: tuple[Any, ...] | None = None
    for row in rows:
        k = (row["effective_time"], row["provider_id"], row["reading_id"], row["type"])
        if group and k != key:
            yield group
            group = []
        key = k
        group.append(row)
    if group:
        yield group


# Resources ----------------------------------------------------------------------


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code} | ({"display": display} if display else {})


def _org(entity_id: Any) -> dict[str, Any]:
    """A logical reference to a provider or partner: its id, never its user refs."""
    return {"type": "Organization", "identifier": {"system": URI, "value": f"urn:uuid:{entity_id}"}}


def patient(subject: dict[str, Any], disclosed: list[dict[str, Any]]) -> dict[str, Any]:
    """The subject: its id, residency, and what partners received of its data."""
    sid = str(subject["subject_id"])
    extension = [{"url": EXT_RESIDENCY, "valueCode": subject["residency"]}]
    extension += [_disclosure(row) for row in disclosed]
    return {
        "resourceType": "Patient",
        "id": sid,
        "identifier": [{"system": URI, "value": f"urn:uuid:{sid}"}],
        "extension": extension,
    }


def _disclosure(row: dict[str, Any]) -> dict[str, Any]:
    partner_name = {"display": row["partner_name"]}  # a recipient's name (Art. 15(1)(c))
    parts: list[dict[str, Any]] = [
        {"url": "disclosureId", "valueString": str(row["disclosure_id"])},
        {"url": "kind", "valueCode": row["kind"]},
        {"url": "partner", "valueReference": _org(row["partner_id"]) | partner_name},
        {"url": "partnerRegion", "valueCode": row["partner_region"]},
        {"url": "disclosedAt", "valueDateTime": _time(row["disclosed_at"])},
        {"url": "rows", "valueInteger": int(row["rows"] or 0)},
    ]
    if row.get("what") is not None:
        parts.append({"url": "what", "valueString": dumps(row["what"]).decode()})
    return {"url": EXT_DISCLOSURE, "extension": parts}


def _time(value: datetime) -> str:
    return dumps(value).decode().strip('"')


def _period(start: datetime | None, end: datetime | None) -> dict[str, str] | None:
    period = ({"start": _time(start)} if start else {}) | ({"end": _time(end)} if end else {})
    return period or None


def _purpose(purpose: str) -> list[dict[str, str]]:
    codings = [_coding(PURPOSE_SYSTEM, purpose)]
    if purpose in PURPOSE_OF_USE:
        codings.append(_coding(ACT_REASON, *PURPOSE_OF_USE[purpose]))
    return codings


def _type_concept(reading_type: str) -> dict[str, Any]:
    codings = [_coding(LOINC, code, display) for code, display in TYPE_LOINC[reading_type]]
    return {"coding": [*codings, _coding(READING_TYPE_SYSTEM, reading_type)]}


def _consent_base(
    record: str, purpose: str, active: bool, at: datetime, ended: datetime | None, patient_ref: str
) -> dict[str, Any]:
    scope = "research" if purpose == "research" else "patient-privacy"
    rule = "OPTIN" if record == "consent" else "OPTOUT"
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active" if active else "inactive",
        "scope": {"coding": [_coding(CONSENT_SCOPE, scope)]},
        "category": [
            {"coding": [_coding(RECORD_SYSTEM, record)]},
            {"coding": [_coding(LOINC, "59284-0", "Patient Consent")]},
        ],
        "patient": {"reference": patient_ref},
        "dateTime": _time(at),
        "policyRule": {"coding": [_coding(ACT_CODE, rule)]},
    }
    if ended is not None:
        resource["extension"] = [{"url": EXT_ENDED, "valueDateTime": _time(ended)}]
    return resource


def consent(row: dict[str, Any], patient_ref: str) -> dict[str, Any]:
    """A consent: permit `purpose` for its types, provider and [from, until);
    `inactive` once withdrawn (the withdrawal time in the `ended` extension)."""
    withdrawn = row["withdrawn_at"]
    resource = _consent_base(
        "consent", row["purpose"], withdrawn is None, row["granted_at"], withdrawn, patient_ref
    )
    resource["identifier"] = [{"system": URI, "value": f"urn:uuid:{row['consent_id']}"}]
    provision: dict[str, Any] = {"type": "permit", "purpose": _purpose(row["purpose"])}
    if period := _period(row["valid_from"], row["valid_until"]):
        provision["period"] = period
    if row["provider_id"] is not None:
        role = {"coding": [_coding(PARTICIPATION, "INF", "informant")]}
        provision["actor"] = [{"role": role, "reference": _org(row["provider_id"])}]
    if row["types"]:
        provision["code"] = [_type_concept(t) for t in row["types"]]
    resource["provision"] = provision
    return resource


def objection(row: dict[str, Any], patient_ref: str) -> dict[str, Any]:
    """An objection: a Consent that denies `purpose` (to one partner when it
    names one); `inactive` once lifted."""
    lifted = row["lifted_at"]
    resource = _consent_base(
        "objection", row["purpose"], lifted is None, row["objected_at"], lifted, patient_ref
    )
    resource["identifier"] = [{"system": URI, "value": f"urn:uuid:{row['objection_id']}"}]
    provision: dict[str, Any] = {"type": "deny", "purpose": _purpose(row["purpose"])}
    if row["partner_id"] is not None:
        role = {"coding": [_coding(PARTICIPATION, "IRCP", "information recipient")]}
        provision["actor"] = [{"role": role, "reference": _org(row["partner_id"])}]
    resource["provision"] = provision
    return resource


def _quantity(row: dict[str, Any]) -> dict[str, Any]:
    """The canonical value in UCUM; the value as sent in an extension when it differs."""
    quantity: dict[str, Any] = {"value": row["value"], "unit": row["unit"]}
    quantity |= {"system": UCUM, "code": row["unit"]}
    if row["orig_unit"] != row["unit"] or row["orig_value"] != row["value"]:
        sent = {"value": row["orig_value"], "unit": row["orig_unit"]}
        quantity["extension"] = [{"url": EXT_ORIGINAL, "valueQuantity": sent}]
    return quantity


def _component_code(name: str) -> dict[str, Any]:
    loinc = COMPONENT_LOINC.get(name)
    codings = [_coding(LOINC, *loinc)] if loinc else []
    return {"coding": [*codings, _coding(COMPONENT_SYSTEM, name)]}


def observation(rows: list[dict[str, Any]], patient_ref: str) -> tuple[str, dict[str, Any]]:
    """One reading (its component rows) -> (fullUrl, Observation)."""
    first = rows[0]
    reading_type = first["type"]
    when = _time(first["effective_time"])
    key = f"{first['provider_id']}/{first['reading_id']}/{when}"
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [
            {"system": f"urn:uuid:{first['provider_id']}", "value": first["reading_id"]}
        ],
        "status": "entered-in-error" if first["erroneous"] else "final",
    }
    if (category := CATEGORY.get(reading_type, "vital-signs")) is not None:
        resource["category"] = [{"coding": [_coding(OBS_CATEGORY, category)]}]
    resource |= {
        "code": _type_concept(reading_type),
        "subject": {"reference": patient_ref},
        "effectiveDateTime": when,
        "issued": _time(first["received_at"]),
    }
    if len(rows) == 1 and reading_type not in ("geoposition", "blood-pressure"):
        resource["valueQuantity"] = _quantity(first)
    else:
        resource["component"] = [
            {"code": _component_code(r["component"]), "valueQuantity": _quantity(r)} for r in rows
        ]
    if first["latitude"] is not None and first["longitude"] is not None:
        resource["extension"] = [
            {
                "url": EXT_LOCATION,
                "extension": [
                    {"url": "latitude", "valueDecimal": first["latitude"]},
                    {"url": "longitude", "valueDecimal": first["longitude"]},
                ],
            }
        ]
    return f"urn:uuid:{uuid.uuid5(_READING_NS, key)}", resource
