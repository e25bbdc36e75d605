"""Build registry state (providers, subjects, consents) and data points for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from schemas.reading import SENT_VERSIONS, TYPES
from store import registry


def provider(
    conn: psycopg.Connection, master: bytes, types: tuple[str, ...] = TYPES, name: str | None = None
) -> dict[str, Any]:
    result = registry.add_provider(conn, master, name or f"p-{uuid.uuid4().hex[:8]}", types, "test")
    conn.commit()
    return result


def subject(
    conn: psycopg.Connection, provider_id: str, user_ref: str, residency: str = "EU"
) -> str:
    sid = registry.add_subject(conn, residency, [(provider_id, user_ref)], "test")["subject_id"]
    conn.commit()
    return str(sid)


def consent(
    conn: psycopg.Connection, subject_id: str, purpose: str = "collection", **kwargs: Any
) -> str:
    cid = registry.grant_consent(conn, subject_id, purpose, "test", **kwargs)["consent_id"]
    conn.commit()
    return str(cid)


def data_point(
    user_ref: str,
    type_: str = "heart-rate",
    *,
    id: str | None = None,
    when: datetime | None = None,
    value: float = 72.0,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    when = when or datetime.now(UTC) - timedelta(minutes=1)
    stamp = when.isoformat().replace("+00:00", "Z")
    if body is None:
        body = BODIES[type_](value)
    if type_ == "step-count":  # step counts cover an interval
        end = (when + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        frame: dict[str, Any] = {"time_interval": {"start_date_time": stamp, "end_date_time": end}}
    else:
        frame = {"date_time": stamp}
    body = {**body, "effective_time_frame": frame}
    return {
        "header": {
            "id": id or str(uuid.uuid4()),
            "creation_date_time": stamp,
            "schema_id": {"namespace": "omh", "name": type_, "version": SENT_VERSIONS[type_]},
            "acquisition_provenance": {"source_name": "test-device", "modality": "sensed"},
            "user_id": user_ref,
        },
        "body": body,
    }


BODIES: dict[str, Any] = {
    "heart-rate": lambda v: {"heart_rate": {"value": v, "unit": "beats/min"}},
    "blood-pressure": lambda v: {
        "systolic_blood_pressure": {"value": v + 48, "unit": "mmHg"},
        "diastolic_blood_pressure": {"value": v, "unit": "mmHg"},
    },
    "blood-glucose": lambda v: {
        "blood_glucose": {"value": v + 20, "unit": "mg/dL"},
        "temporal_relationship_to_meal": "fasting",
    },
    "body-weight": lambda v: {"body_weight": {"value": v, "unit": "kg"}},
    "body-temperature": lambda v: {"body_temperature": {"value": 36.6, "unit": "C"}},
    "oxygen-saturation": lambda v: {"oxygen_saturation": {"value": 97, "unit": "%"}},
    "respiratory-rate": lambda v: {"respiratory_rate": {"value": 14, "unit": "breaths/min"}},
    "step-count": lambda v: {"step_count": {"value": int(v * 100), "unit": "steps"}},
    "geoposition": lambda v: {
        "latitude": {"value": 60.17, "unit": "deg"},
        "longitude": {"value": 24.94, "unit": "deg"},
    },
}
