"""The parsed form every transport hands to the gate.

A payload (Open mHealth data point or FHIR Observation) becomes either a
`Reading` (valid, normalised to canonical UCUM units, plausible) or a
`Refusal` carrying one of the contract's reason codes. Nothing else crosses
from `schemas/` into `ingest/`.

They are frozen msgspec Structs, not dataclasses: one is made per data point
(and per component) on the hot path, and a frozen dataclass costs about 20
times as much to build. `gc=False`: they hold no cycles, so the cyclic
garbage collector need not track the millions of them a busy ingester makes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

# Contract reason codes (CONTRACT.md, "Reason codes").
INVALID_SCHEMA: Final = "invalid_schema"
UNSUPPORTED_TYPE: Final = "unsupported_type"
IMPLAUSIBLE_VALUE: Final = "implausible_value"
UNKNOWN_SUBJECT: Final = "unknown_subject"
NO_CONSENT: Final = "no_consent"
TYPE_NOT_APPROVED: Final = "type_not_approved"
FUTURE_TIMESTAMP: Final = "future_timestamp"
REASONS: Final = (
    INVALID_SCHEMA,
    UNSUPPORTED_TYPE,
    IMPLAUSIBLE_VALUE,
    UNKNOWN_SUBJECT,
    NO_CONSENT,
    TYPE_NOT_APPROVED,
    FUTURE_TIMESTAMP,
)

# The nine v1 types of the contract, by Open mHealth schema name.
TYPES: Final = (
    "heart-rate",
    "blood-pressure",
    "blood-glucose",
    "body-weight",
    "body-temperature",
    "oxygen-saturation",
    "respiratory-rate",
    "step-count",
    "geoposition",
)
LOCATION_TYPE: Final = "geoposition"

# The Open mHealth schema version of each type that our own senders (the demo's
# simulator and the tests' data points) put in `header.schema_id.version`.
SENT_VERSIONS: Final = {
    "heart-rate": "2.0",
    "blood-pressure": "4.0",
    "blood-glucose": "4.0",
    "body-weight": "3.0",
    "body-temperature": "4.0",
    "oxygen-saturation": "2.0",
    "respiratory-rate": "2.0",
    "step-count": "3.0",
    "geoposition": "1.0",
}


class Component(msgspec.Struct, frozen=True, gc=False):
    """One measured quantity of a reading, canonical and as sent."""

    name: str  # e.g. "systolic_blood_pressure"
    value: float  # in the canonical UCUM unit
    unit: str  # canonical UCUM unit, e.g. "mm[Hg]"
    orig_value: float
    orig_unit: str  # unit as sent, e.g. "mmHg" or "mmol/L"


class Reading(msgspec.Struct, frozen=True, gc=False):
    id: str  # header.id / FHIR identifier
    user_ref: str  # the provider's own reference for the person
    type: str  # one of TYPES
    effective_time: datetime  # timezone-aware UTC
    components: tuple[Component, ...]
    latitude: float | None = None  # coordinates found inside the reading, if any
    longitude: float | None = None


class Refusal(msgspec.Struct, frozen=True, gc=False):
    id: str | None  # reading id when it could be read
    reason: str  # one of REASONS
    detail: str  # human explanation; never contains a health value
