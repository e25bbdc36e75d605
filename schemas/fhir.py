"""FHIR R4 ``Observation`` (or a ``Bundle`` of them) -> `Reading` | `Refusal`.

Mapping (CONTRACT.md, "Readings: the payload"):

| LOINC (any coding with system http://loinc.org) | type              |
|-------------------------------------------------|-------------------|
| 8867-4                                          | heart-rate        |
| 85354-9 panel, components 8480-6 / 8462-4       | blood-pressure    |
| 2339-0, 15074-8 (mmol/L), 2345-7                | blood-glucose     |
| 29463-7                                         | body-weight       |
| 8310-5                                          | body-temperature  |
| 59408-5, 2708-6                                 | oxygen-saturation |
| 9279-1                                          | respiratory-rate  |
| 41950-7                                         | step-count        |

* value: ``valueQuantity`` (per component for the blood-pressure panel), unit
  from its UCUM ``code``, else its ``unit``; normalised and checked exactly as
  Open mHealth values are (`schemas.normalise`).
* user ref: the id of ``subject.reference`` ``[base/]Patient/<id>[/_history/v]``.
* reading id: the first ``identifier`` with a ``value``, else ``Observation.id``.
* effective time: ``effectiveDateTime``, else ``effectivePeriod.start``; a
  full date (``2012-09-17``) means midnight UTC, a date-time needs its UTC
  offset, a year or year-month alone is too vague and refused.
* ``status`` ``entered-in-error`` or ``cancelled``: refused, there is no
  measurement to keep.

Refusals: a resource that is not an Observation, or a malformed one, is
``invalid_schema``; an Observation without a supported LOINC code is
``unsupported_type``. Only codes, values, units, ids and times are read:
``display`` names, narrative ``text`` and everything else never reach a
`Reading` (nor a refusal's ``detail``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Literal, NotRequired

from pydantic import StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from schemas.base import MAX_ID, Id, describe, strict
from schemas.normalise import normalise
from schemas.reading import INVALID_SCHEMA, UNSUPPORTED_TYPE, Reading, Refusal

LOINC_SYSTEM: Final = "http://loinc.org"
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"
BP_PANEL: Final = "85354-9"
SYSTOLIC: Final = "8480-6"
DIASTOLIC: Final = "8462-4"
BP_COMPONENTS: Final = {SYSTOLIC: "systolic_blood_pressure", DIASTOLIC: "diastolic_blood_pressure"}

# LOINC code -> (type, component) of a single-valued Observation.
LOINC: Final[dict[str, tuple[str, str]]] = {
    "8867-4": ("heart-rate", "heart_rate"),
    "29463-7": ("body-weight", "body_weight"),
    "59408-5": ("oxygen-saturation", "oxygen_saturation"),
    "2708-6": ("oxygen-saturation", "oxygen_saturation"),
    "2339-0": ("blood-glucose", "blood_glucose"),
    "15074-8": ("blood-glucose", "blood_glucose"),
    "2345-7": ("blood-glucose", "blood_glucose"),
    "8310-5": ("body-temperature", "body_temperature"),
    "9279-1": ("respiratory-rate", "respiratory_rate"),
    "41950-7": ("step-count", "step_count"),
}
NOT_MEASURED: Final = frozenset({"entered-in-error", "cancelled"})
MAX_REF_LENGTH: Final = MAX_ID

# FHIR dateTime restricted to what can be placed in time: a full date, or a
# date-time with seconds and a UTC offset.
_FHIR_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))?"
)
_PATIENT_REF: Final = re.compile(
    r"(?:[^\s]*/)?Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)


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
class ObservationComponent(TypedDict):
    code: CodeableConcept
    valueQuantity: NotRequired[Quantity]


@strict
class Observation(TypedDict):
    resourceType: Literal["Observation"]
    id: NotRequired[Id]
    identifier: NotRequired[list[Identifier]]
    status: NotRequired[Id]
    code: CodeableConcept
    subject: NotRequired[Reference]
    effectiveDateTime: NotRequired[Id]
    effectivePeriod: NotRequired[Period]
    valueQuantity: NotRequired[Quantity]
    component: NotRequired[list[ObservationComponent]]


_OBSERVATION: Final = TypeAdapter(Observation)


class _Invalid(ValueError):
    """A malformed Observation (-> invalid_schema with this message)."""


def parse_fhir(obj: object, *, now: datetime) -> list[Reading | Refusal]:
    """One Observation, or each entry of a Bundle, parsed. Never raises."""
    try:
        if isinstance(obj, dict) and obj.get("resourceType") == "Bundle":
            return _bundle(obj, now)
        return [parse_observation(obj, now=now)]
    except Exception:  # last line of defence: a transport must never see an exception
        return [Refusal(None, INVALID_SCHEMA, "FHIR resource could not be parsed")]


def _bundle(bundle: dict[str, Any], now: datetime) -> list[Reading | Refusal]:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        return [Refusal(None, INVALID_SCHEMA, "Bundle.entry: must be an array")]
    out: list[Reading | Refusal] = []
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if resource is None:
            out.append(Refusal(None, INVALID_SCHEMA, f"Bundle.entry.{i}.resource: required"))
        else:
            out.append(parse_observation(resource, now=now))
    return out


def parse_observation(obj: object, *, now: datetime) -> Reading | Refusal:
    """One FHIR R4 Observation. Never raises."""
    try:
        return _observation(obj, now)
    except Exception:  # see parse_fhir
        return Refusal(None, INVALID_SCHEMA, "Observation could not be parsed")


def _observation(obj: object, now: datetime) -> Reading | Refusal:
    if not isinstance(obj, dict):
        return Refusal(None, INVALID_SCHEMA, "resource must be a JSON object")
    if obj.get("resourceType") != "Observation":
        return Refusal(None, INVALID_SCHEMA, "resourceType must be Observation (or a Bundle)")
    try:
        obs = _OBSERVATION.validate_python(obj)
    except ValidationError as exc:
        return Refusal(_raw_id(obj), INVALID_SCHEMA, describe(exc, "Observation"))
    rid = _reading_id(obs)
    try:
        if rid is None:
            raise _Invalid("Observation: identifier.value or id required")
        if obs.get("status") in NOT_MEASURED:
            raise _Invalid("Observation.status: entered-in-error or cancelled")
        kind = _type_of(obs["code"])
        if kind is None:
            return Refusal(rid, UNSUPPORTED_TYPE, "Observation.code: no supported LOINC code")
        user_ref = _user_ref(obs.get("subject"))
        when = _effective_time(obs)
        if kind == "blood-pressure":
            values = _blood_pressure(obs.get("component", []))
        else:
            component = LOINC[next(c for c in _loinc_codes(obs["code"]) if c in LOINC)][1]
            values = [_value(component, obs.get("valueQuantity"), "Observation.valueQuantity")]
    except _Invalid as exc:
        return Refusal(rid, INVALID_SCHEMA, str(exc))
    components = normalise(rid, values, when, now)
    if isinstance(components, Refusal):
        return components
    return Reading(rid, user_ref, kind, when, components)


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


def _loinc_codes(concept: CodeableConcept) -> list[str]:
    return [
        c["code"]
        for c in concept.get("coding", [])
        if c.get("system") == LOINC_SYSTEM and "code" in c
    ]


def _type_of(concept: CodeableConcept) -> str | None:
    for code in _loinc_codes(concept):
        if code == BP_PANEL:
            return "blood-pressure"
        if code in LOINC:
            return LOINC[code][0]
    return None


def _user_ref(subject: Reference | None) -> str:
    ref = (subject or {}).get("reference")
    m = _PATIENT_REF.fullmatch(ref) if ref else None
    if m is None:
        raise _Invalid("Observation.subject.reference: must be Patient/<id>")
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


def _value(component: str, q: Quantity | None, field: str) -> tuple[str, float, str]:
    if q is None or "value" not in q:
        raise _Invalid(f"{field}.value: required")
    code = q.get("code") if q.get("system", UCUM_SYSTEM) == UCUM_SYSTEM else None
    unit = code or q.get("unit")
    if not unit:
        raise _Invalid(f"{field}: code or unit required")
    return component, q["value"], unit


def _blood_pressure(parts: list[ObservationComponent]) -> list[tuple[str, float, str]]:
    found: dict[str, tuple[str, float, str]] = {}
    for i, part in enumerate(parts):
        codes = _loinc_codes(part["code"])
        for code, component in BP_COMPONENTS.items():
            if code in codes and code not in found:
                field = f"Observation.component.{i}.valueQuantity"
                found[code] = _value(component, part.get("valueQuantity"), field)
    for code in (SYSTOLIC, DIASTOLIC):
        if code not in found:
            raise _Invalid(f"Observation.component: LOINC {code} required in the panel")
    return [found[SYSTOLIC], found[DIASTOLIC]]
