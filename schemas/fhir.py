"""FHIR R4 ``Observation`` (or a ``Bundle`` of them) -> `Reading` | `Refusal`.

Mapping (CONTRACT.md, "Readings: the payload" and "FHIR input, wider"):

* type: the first coding of ``Observation.code`` that `schemas.fhir_codes`
  knows (LOINC ``http://loinc.org`` or IEEE 11073 MDC
  ``urn:iso:std:iso:11073:10101``) decides; a code outside the nine types
  (or a known near miss such as the mean blood pressure 96607-7) is
  ``unsupported_type``. Blood-pressure panels (85354-9, 55284-4, MDC 150020)
  take systolic and diastolic from their components (LOINC 8480-6 / 8462-4 or
  MDC 150021 / 150022).
* value: ``valueQuantity`` (per component for the blood-pressure panel), unit
  from its ``code`` when its system is UCUM (or absent), else its ``unit``;
  normalised and checked exactly as Open mHealth values are (`schemas.normalise`).
* user ref: the id of ``subject.reference`` ``[base/]Patient/<id>[/_history/v]``;
  inside a Bundle also ``urn:uuid:<uuid>`` naming the ``fullUrl`` of a Patient
  entry (its ``id``, else the uuid), as transaction Bundles reference it.
* reading id: the first ``identifier`` with a ``value``, else ``Observation.id``,
  else (in a Bundle) the entry's ``fullUrl`` when it is a ``urn:uuid:`` or ``urn:oid:``.
* effective time: ``effectiveDateTime``, else ``effectivePeriod.start``; a
  full date (``2012-09-17``) means midnight UTC, a date-time needs its UTC
  offset, a year or year-month alone is too vague and refused.

Refused as ``invalid_schema`` with a detail: ``status`` ``entered-in-error`` or
``cancelled``; ``dataAbsentReason`` instead of a value (on the Observation or a
needed component); no effective time; a value that is not a ``valueQuantity``;
a resource that is not an Observation (also as a Bundle entry: every entry gets
its result, in order, and nothing of another resource is kept, not even its
id); a Bundle whose ``type`` is not transaction, batch, collection or document
(or absent). Nested Bundles (an entry whose resource is a Bundle, as in a
``document`` or ``collection``) are read depth first, up to `MAX_DEPTH`.

Only codes, values, units, ids and times are read: ``display`` names,
narrative ``text`` and everything else never reach a `Reading` (nor a
refusal's ``detail``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Literal, NotRequired

from pydantic import StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from schemas.base import MAX_ID, Id, describe, strict
from schemas.fhir_codes import (
    BLOOD_PRESSURE,
    BP_COMPONENTS,
    CODES,
    DIASTOLIC,
    NOT_READINGS,
    SYSTOLIC,
    UCUM_SYSTEM,
    system_name,
)
from schemas.normalise import normalise
from schemas.reading import INVALID_SCHEMA, UNSUPPORTED_TYPE, Reading, Refusal

NOT_MEASURED: Final = frozenset({"entered-in-error", "cancelled"})
BUNDLE_TYPES: Final = frozenset({"transaction", "batch", "collection", "document"})
MAX_DEPTH: Final = 4  # Bundles nested in Bundles
MAX_REF_LENGTH: Final = MAX_ID
VALUE_KEYS: Final = (
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)

# FHIR dateTime restricted to what can be placed in time: a full date, or a
# date-time with seconds and a UTC offset.
_FHIR_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))?"
)
_PATIENT_REF: Final = re.compile(
    r"(?:[^\s]*/)?Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_URN_UUID: Final = re.compile(r"urn:uuid:([0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})")
_ENTRY_URN: Final = re.compile(
    r"urn:uuid:[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|urn:oid:[0-2](?:\.[0-9]{1,20}){1,30}"
)
_FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@strict
class Coding(TypedDict, total=False):
    system: Id
    code: Id


@strict
class CodeableConcept(TypedDict, total=False):
    coding: list[Coding]


@strict
class Quantity(TypedDict, total=False):
    value: float
    unit: Id
    system: Id
    code: Id


@strict
class Reference(TypedDict, total=False):
    reference: Annotated[str, StringConstraints(max_length=1024)]  # [base/]Patient/<id>


@strict
class Identifier(TypedDict, total=False):
    value: Id


@strict
class Period(TypedDict, total=False):
    start: Id


@strict
class _OtherValues(TypedDict, total=False):
    """value[x] other than valueQuantity: only seen, to say why they are refused."""

    valueCodeableConcept: Any
    valueString: Any
    valueBoolean: Any
    valueInteger: Any
    valueRange: Any
    valueRatio: Any
    valueSampledData: Any
    valueTime: Any
    valueDateTime: Any
    valuePeriod: Any


@strict
class ObservationComponent(_OtherValues):
    code: CodeableConcept
    valueQuantity: NotRequired[Quantity]
    dataAbsentReason: NotRequired[dict[str, Any]]


@strict
class Observation(_OtherValues):
    resourceType: Literal["Observation"]
    id: NotRequired[Id]
    identifier: NotRequired[list[Identifier]]
    status: NotRequired[Id]
    code: CodeableConcept
    subject: NotRequired[Reference]
    effectiveDateTime: NotRequired[Id]
    effectivePeriod: NotRequired[Period]
    valueQuantity: NotRequired[Quantity]
    dataAbsentReason: NotRequired[dict[str, Any]]
    component: NotRequired[list[ObservationComponent]]


_OBSERVATION: Final = TypeAdapter(Observation)


class _Invalid(ValueError):
    """A malformed Observation (-> invalid_schema with this message)."""


def parse_fhir(obj: object, *, now: datetime) -> list[Reading | Refusal]:
    """One Observation, or each entry of a Bundle (nested Bundles included),
    parsed in order. Never raises."""
    try:
        if isinstance(obj, dict) and obj.get("resourceType") == "Bundle":
            return _bundle(obj, now, 0)
        return [parse_observation(obj, now=now)]
    except Exception:  # last line of defence: a transport must never see an exception
        return [_refusal(None, INVALID_SCHEMA, "FHIR resource could not be parsed")]


def count_items(obj: object) -> int:
    """How many results `parse_fhir` gives for `obj` (entries of nested Bundles
    counted one by one), without parsing an Observation."""
    return _count(obj, 0)


def _count(obj: object, depth: int) -> int:
    if not (isinstance(obj, dict) and obj.get("resourceType") == "Bundle"):
        return 1
    entries = obj.get("entry", [])
    if depth >= MAX_DEPTH or not isinstance(entries, list) or _bundle_type_refusal(obj):
        return 1
    return sum(
        _count(e.get("resource") if isinstance(e, dict) else None, depth + 1) for e in entries
    )


def _refusal(rid: str | None, reason: str, detail: str) -> Refusal:
    return Refusal(id=rid, reason=reason, detail=detail)


def _bundle_type_refusal(bundle: dict[str, Any]) -> str | None:
    kind = bundle.get("type")
    if kind is None or (isinstance(kind, str) and kind in BUNDLE_TYPES):
        return None
    return "Bundle.type: must be transaction, batch, collection or document"


def _bundle(bundle: dict[str, Any], now: datetime, depth: int) -> list[Reading | Refusal]:
    entries = bundle.get("entry", [])
    if depth >= MAX_DEPTH:
        return [_refusal(None, INVALID_SCHEMA, f"Bundle: nested more than {MAX_DEPTH} deep")]
    if not isinstance(entries, list):
        return [_refusal(None, INVALID_SCHEMA, "Bundle.entry: must be an array")]
    wrong_type = _bundle_type_refusal(bundle)
    if wrong_type is not None:
        return [_refusal(None, INVALID_SCHEMA, wrong_type)]
    patients = _patients(entries)
    out: list[Reading | Refusal] = []
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if resource is None:
            out.append(_refusal(None, INVALID_SCHEMA, f"Bundle.entry.{i}.resource: required"))
        elif isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
            out.extend(_bundle(resource, now, depth + 1))
        else:
            url = entry.get("fullUrl")
            url = url if isinstance(url, str) and _ENTRY_URN.fullmatch(url) else None
            out.append(parse_observation(resource, now=now, patients=patients, full_url=url))
    return out


def _patients(entries: list[Any]) -> dict[str, str]:
    """`fullUrl` (urn:uuid:...) -> Patient id, for the Patient entries of a Bundle."""
    found: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        url, resource = entry.get("fullUrl"), entry.get("resource")
        if not (isinstance(url, str) and isinstance(resource, dict)):
            continue
        if resource.get("resourceType") != "Patient" or _URN_UUID.fullmatch(url) is None:
            continue
        pid = resource.get("id")
        found[url] = pid if isinstance(pid, str) and _FHIR_ID.fullmatch(pid) else url[9:]
    return found


def parse_observation(
    obj: object,
    *,
    now: datetime,
    patients: dict[str, str] | None = None,
    full_url: str | None = None,
) -> Reading | Refusal:
    """One FHIR R4 Observation. Inside a Bundle, `patients` resolves urn:uuid
    subject references and `full_url` (the entry's urn:uuid or urn:oid) is the reading id
    of an Observation without identifier or id. Never raises."""
    try:
        return _observation(obj, now, patients or {}, full_url)
    except Exception:  # see parse_fhir
        return _refusal(None, INVALID_SCHEMA, "Observation could not be parsed")


def _observation(
    obj: object, now: datetime, patients: dict[str, str], full_url: str | None
) -> Reading | Refusal:
    if not isinstance(obj, dict):
        return _refusal(None, INVALID_SCHEMA, "resource must be a JSON object")
    kind_of_resource = obj.get("resourceType")
    if kind_of_resource != "Observation":
        what = kind_of_resource if _is_type_name(kind_of_resource) else "resource"
        return _refusal(
            None, INVALID_SCHEMA, f"{what}: resourceType must be Observation (or a Bundle)"
        )
    try:
        obs = _OBSERVATION.validate_python(obj)
    except ValidationError as exc:
        return _refusal(_raw_id(obj) or full_url, INVALID_SCHEMA, describe(exc, "Observation"))
    rid = _reading_id(obs) or full_url
    try:
        if rid is None:
            raise _Invalid(
                "Observation: identifier.value, id or a urn:uuid/urn:oid fullUrl required"
            )
        if obs.get("status") in NOT_MEASURED:
            raise _Invalid(f"Observation.status: {obs.get('status')}, no measurement to keep")
        found = _type_of(obs["code"])
        if isinstance(found, str):
            return _refusal(rid, UNSUPPORTED_TYPE, found)
        kind, component = found
        user_ref = _user_ref(obs.get("subject"), patients)
        when = _effective_time(obs)
        if kind == BLOOD_PRESSURE:
            values = _blood_pressure(obs)
        else:
            assert component is not None
            values = [_value(component, obs, "Observation")]
    except _Invalid as exc:
        return _refusal(rid, INVALID_SCHEMA, str(exc))
    components = normalise(rid, values, when, now)
    if isinstance(components, Refusal):
        return components
    return Reading(id=rid, user_ref=user_ref, type=kind, effective_time=when, components=components)


def _is_type_name(value: object) -> bool:
    return isinstance(value, str) and value.isascii() and value.isalpha() and len(value) <= 64


def _raw_id(obj: dict[str, Any]) -> str | None:
    rid = obj.get("id")
    return rid if isinstance(rid, str) and 0 < len(rid) <= MAX_REF_LENGTH else None


def _reading_id(obs: Observation) -> str | None:
    for ident in obs.get("identifier", []):
        value = ident.get("value")
        if value:
            return value if len(value) <= MAX_REF_LENGTH else None
    rid = obs.get("id")
    return rid if rid and len(rid) <= MAX_REF_LENGTH else None


def _type_of(concept: CodeableConcept) -> tuple[str, str | None] | str:
    """(type, component) of the first known coding, else why it is unsupported."""
    for coding in concept.get("coding", []):
        key = (coding.get("system", ""), coding.get("code", ""))
        if key in CODES:
            return CODES[key]
        if key in NOT_READINGS:
            return f"Observation.code: {system_name(key[0])} {key[1]}: {NOT_READINGS[key]}"
    return "Observation.code: no LOINC or MDC code of a supported type"


def _user_ref(subject: Reference | None, patients: dict[str, str]) -> str:
    ref = (subject or {}).get("reference")
    if ref is not None and ref in patients:
        return patients[ref]
    m = _PATIENT_REF.fullmatch(ref) if ref else None
    if m is None:
        raise _Invalid(
            "Observation.subject.reference: must be Patient/<id> (or a Patient's urn:uuid)"
        )
    return m.group(1)


def _effective_time(obs: Observation) -> datetime:
    if "effectiveDateTime" in obs:
        return _fhir_time(obs["effectiveDateTime"], "Observation.effectiveDateTime")
    start = obs.get("effectivePeriod", {}).get("start")
    if start is not None:
        return _fhir_time(start, "Observation.effectivePeriod.start")
    raise _Invalid("Observation: effectiveDateTime or effectivePeriod.start required")


def _fhir_time(text: str, field: str) -> datetime:
    if _FHIR_TIME.fullmatch(text) is None:
        raise _Invalid(f"{field}: must be a full date or a date-time with offset")
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _Invalid(f"{field}: not a valid date-time") from None


def _value(
    component: str, holder: Observation | ObservationComponent, where: str
) -> tuple[str, float, str]:
    if "dataAbsentReason" in holder:
        raise _Invalid(f"{where}.dataAbsentReason: no value to keep")
    q = holder.get("valueQuantity")
    if q is None:
        other = next((k for k in VALUE_KEYS if k in holder), None)
        if other is not None:
            raise _Invalid(f"{where}.{other}: a valueQuantity is required")
        raise _Invalid(f"{where}.valueQuantity: required")
    field = f"{where}.valueQuantity"
    if "value" not in q:
        raise _Invalid(f"{field}.value: required")
    code = q.get("code") if q.get("system", UCUM_SYSTEM) == UCUM_SYSTEM else None
    unit = code or q.get("unit")
    if not unit:
        raise _Invalid(f"{field}: code or unit required")
    return component, q["value"], unit


def _blood_pressure(obs: Observation) -> list[tuple[str, float, str]]:
    if "dataAbsentReason" in obs and "component" not in obs:
        raise _Invalid("Observation.dataAbsentReason: no value to keep")
    found: dict[str, tuple[str, float, str]] = {}
    for i, part in enumerate(obs.get("component", [])):
        for coding in part["code"].get("coding", []):
            name = BP_COMPONENTS.get((coding.get("system", ""), coding.get("code", "")))
            if name is not None and name not in found:
                found[name] = _value(name, part, f"Observation.component.{i}")
                break
    for name, code in ((SYSTOLIC, "8480-6"), (DIASTOLIC, "8462-4")):
        if name not in found:
            raise _Invalid(f"Observation.component: {name} (LOINC {code}) required in the panel")
    return [found[SYSTOLIC], found[DIASTOLIC]]
