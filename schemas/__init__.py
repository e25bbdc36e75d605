"""vitals: payload parsing (Open mHealth data points, FHIR R4 Observations).

`parse_data_point` and `parse_fhir` turn a decoded payload into `Reading`s
(validated, canonical UCUM units, plausible) or `Refusal`s; they never raise.
"""

from schemas.fhir import parse_fhir
from schemas.omh import parse_data_point
from schemas.reading import (
    FUTURE_TIMESTAMP,
    IMPLAUSIBLE_VALUE,
    INVALID_SCHEMA,
    LOCATION_TYPE,
    NO_CONSENT,
    REASONS,
    TYPE_NOT_APPROVED,
    TYPES,
    UNKNOWN_SUBJECT,
    UNSUPPORTED_TYPE,
    Component,
    Reading,
    Refusal,
)

__all__ = [
    "FUTURE_TIMESTAMP",
    "IMPLAUSIBLE_VALUE",
    "INVALID_SCHEMA",
    "LOCATION_TYPE",
    "NO_CONSENT",
    "REASONS",
    "TYPES",
    "TYPE_NOT_APPROVED",
    "UNKNOWN_SUBJECT",
    "UNSUPPORTED_TYPE",
    "Component",
    "Reading",
    "Refusal",
    "parse_data_point",
    "parse_fhir",
]
