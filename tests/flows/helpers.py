"""Seeding helpers for flow tests: registry rows via store.registry, readings via COPY."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from schemas.units import CANONICAL
from tests.support import seed

UNITS = CANONICAL
COMPONENTS = {
    "heart-rate": ("heart_rate",),
    "blood-pressure": ("systolic_blood_pressure", "diastolic_blood_pressure"),
    "blood-glucose": ("blood_glucose",),
    "body-weight": ("body_weight",),
    "body-temperature": ("body_temperature",),
    "oxygen-saturation": ("oxygen_saturation",),
    "respiratory-rate": ("respiratory_rate",),
    "step-count": ("step_count",),
    "geoposition": ("latitude", "longitude"),
}


@dataclass
class Subject:
    subject_id: str
    provider_id: str
    user_ref: str
    consents: dict[str, str] = field(default_factory=dict)


class Registry:
    """A provider plus subjects with consents, and readings for them."""

    def __init__(self, conn: psycopg.Connection, master: bytes) -> None:
        self.conn = conn
        self.provider_id = str(seed.provider(conn, master)["provider_id"])

    def subject(
        self,
        purposes: Sequence[str] = ("collection", "analytics"),
        residency: str = "EU",
        **consent_kwargs: Any,
    ) -> Subject:
        user_ref = f"user-{uuid.uuid4().hex[:10]}"
        sid = seed.subject(self.conn, self.provider_id, user_ref, residency)
        s = Subject(sid, self.provider_id, user_ref)
        for purpose in purposes:
            kwargs = consent_kwargs if purpose in ("analytics", "research") else {}
            s.consents[purpose] = seed.consent(self.conn, sid, purpose, **kwargs)
        return s

    def readings(
        self,
        subject: Subject,
        type_: str,
        points: Iterable[tuple[datetime, float | Sequence[float]]],
        *,
        erroneous: bool = False,
        coords: tuple[float, float] | None = None,
    ) -> int:
        """COPY one reading per (time, value or values per component); returns rows."""
        rows = 0
        comps = COMPONENTS[type_]
        with (
            self.conn.cursor() as cur,
            cur.copy(
                "COPY readings (effective_time, subject_id, provider_id, reading_id, type,"
                " component, value, unit, orig_value, orig_unit, latitude, longitude, erroneous)"
                " FROM STDIN"
            ) as cp,
        ):
            for when, values in points:
                vals = [values] if isinstance(values, int | float) else list(values)
                assert len(vals) == len(comps)
                rid = str(uuid.uuid4())
                lat, lon = coords if coords else (None, None)
                for comp, v in zip(comps, vals, strict=True):
                    cp.write_row(
                        (
                            when,
                            subject.subject_id,
                            subject.provider_id,
                            rid,
                            type_,
                            comp,
                            float(v),
                            UNITS[comp],
                            float(v),
                            UNITS[comp],
                            lat,
                            lon,
                            erroneous,
                        )
                    )
                    rows += 1
        self.conn.commit()
        return rows
