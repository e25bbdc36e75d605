"""Request and response bodies of the API, and the webhook's limits and its
documented examples (OpenAPI at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field

from store import registry

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_ITEMS = 5000


# The webhook -------------------------------------------------------------------


class ItemResult(BaseModel):
    id: str | None
    status: str = Field(description="accepted | duplicate | rejected")
    reason: str | None = Field(
        None,
        description="invalid_schema, unsupported_type, implausible_value, unknown_subject, "
        "no_consent, type_not_approved or future_timestamp",
    )
    detail: str | None = None


class WebhookResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]


class ErrorBody(BaseModel):
    error: str
    detail: str


EXAMPLE_POINT = {
    "header": {
        "id": "3f1c2b7a-0d7e-4a55-9f0e-1b2c3d4e5f60",
        "creation_date_time": "2026-01-15T08:30:00Z",
        "schema_id": {"namespace": "omh", "name": "heart-rate", "version": "2.0"},
        "acquisition_provenance": {"source_name": "Acme Band", "modality": "sensed"},
        "user_id": "partner-user-17",
    },
    "body": {
        "heart_rate": {"value": 64, "unit": "beats/min"},
        "effective_time_frame": {"date_time": "2026-01-15T08:29:00Z"},
    },
}
EXAMPLE_FHIR = {
    "resourceType": "Observation",
    "id": "hr-1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/partner-user-17"},
    "effectiveDateTime": "2026-01-15T08:29:00Z",
    "valueQuantity": {
        "value": 64,
        "unit": "beats/minute",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    },
}
WEBHOOK_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One data point or an array of at most 5,000 (5 MiB), signed with "
        "`Vitals-Signature: t=UNIX_SECONDS,v1=HEX`, HEX = HMAC-SHA256(webhook_secret, "
        '"{t}.{raw_body}"), or with the Standard Webhooks headers `webhook-id`, '
        "`webhook-timestamp` and `webhook-signature` (`v1,BASE64`, key: "
        "`standard_webhooks_secret`).",
        "content": {
            "application/json": {
                "schema": {"oneOf": [{"type": "object"}, {"type": "array", "maxItems": MAX_ITEMS}]},
                "examples": {
                    "one": {"summary": "One Open mHealth data point", "value": EXAMPLE_POINT},
                    "array": {"summary": "An array of data points", "value": [EXAMPLE_POINT]},
                },
            },
            "application/fhir+json": {
                "schema": {"type": "object"},
                "examples": {
                    "observation": {"summary": "A FHIR R4 Observation", "value": EXAMPLE_FHIR},
                    "bundle": {
                        "summary": "A Bundle of Observations",
                        "value": {
                            "resourceType": "Bundle",
                            "type": "collection",
                            "entry": [{"resource": EXAMPLE_FHIR}],
                        },
                    },
                },
            },
        },
    }
}
WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": WebhookResult,
        "description": "Every accepted reading is committed. Results are in input order.",
        "content": {
            "application/json": {
                "example": {
                    "accepted": 1,
                    "duplicates": 0,
                    "rejected": 1,
                    "results": [
                        {"id": "a1", "status": "accepted", "reason": None, "detail": None},
                        {
                            "id": "a2",
                            "status": "rejected",
                            "reason": "no_consent",
                            "detail": "no consent covers this provider, data type and "
                            "effective time",
                        },
                    ],
                }
            }
        },
    },
    400: {"model": ErrorBody, "description": "Malformed JSON or wrong top-level shape"},
    401: {"model": ErrorBody, "description": "Signature missing, wrong, or stale"},
    404: {"model": ErrorBody, "description": "Unknown, suspended or removed provider"},
    413: {"model": ErrorBody, "description": "More than 5 MiB or 5,000 items"},
    415: {"model": ErrorBody, "description": "Not application/json or application/fhir+json"},
    503: {"model": ErrorBody, "description": "Storage unavailable; nothing was stored"},
}


# The admin API -----------------------------------------------------------------


class ProviderIn(BaseModel):
    name: str = Field(examples=["Acme Wearables"])
    types: list[str] = Field(examples=[["heart-rate", "blood-pressure"]])


class ProviderStatusIn(BaseModel):
    status: Literal["active", "suspended", "removed"]


class TokenIn(BaseModel):
    name: str = Field(examples=["dpo-alice"])
    role: Literal["admin", "dpo", "analyst"]
    expires_in_days: int = Field(
        registry.TOKEN_DAYS_DEFAULT,
        ge=1,
        le=registry.TOKEN_DAYS_MAX,
        description="Days until the token stops working",
    )


class LinkIn(BaseModel):
    provider_id: str
    user_ref: str = Field(examples=["partner-user-17"])


class SubjectIn(BaseModel):
    residency: Literal["FI", "EU"]
    links: list[LinkIn] = Field(default_factory=list)


class ConsentIn(BaseModel):
    purpose: Literal["collection", "location", "analytics", "research", "marketing"]
    provider_id: str | None = None
    types: list[str] | None = Field(None, examples=[["heart-rate"]])
    valid_from: datetime | None = Field(
        None, validation_alias=AliasChoices("valid_from", "from"), examples=["2026-01-01T00:00Z"]
    )
    valid_until: datetime | None = Field(
        None, validation_alias=AliasChoices("valid_until", "until")
    )


# Subject rights ----------------------------------------------------------------


class SubjectCorrection(BaseModel):
    residency: Literal["FI", "EU"] | None = None
    relationship_end: datetime | None = Field(None, examples=["2026-12-31T00:00Z"])
    clear_relationship_end: bool = False
    add_links: list[LinkIn] = Field(default_factory=list)
    remove_links: list[LinkIn] = Field(default_factory=list)


class ReadingCorrection(BaseModel):
    provider_id: str
    reading_id: str
    action: Literal["erroneous", "valid", "delete"]


class PartnerIn(BaseModel):
    name: str = Field(examples=["Acme Insights"])
    region: str = Field(examples=["EU"], description="EU or FI")
    purposes: list[str] = Field(examples=[["marketing", "disclosure"]])
    types: list[str] | None = Field(None, examples=[["heart-rate"]])


class ObjectionIn(BaseModel):
    purpose: str = Field(examples=["disclosure"], description="marketing, research or disclosure")
    partner_id: str | None = Field(None, description="disclosure to this partner only")
