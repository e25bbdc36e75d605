"""Simulated devices for `vitals demo`: Open mHealth data points with profiles
(hypertensive, sedentary, …) so the group rules have something to find, plus a
sprinkling of bad payloads."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.reading import SENT_VERSIONS


@dataclass(frozen=True)
class Profile:
    systolic: float
    diastolic: float
    resting_hr: float
    steps: float
    spo2: float
    glucose: float
    weight: float
    weight_trend: float  # kg per 30 days


PROFILES = {
    "healthy": Profile(115, 74, 66, 11_000, 97.5, 92, 72, 0.0),
    "elevated": Profile(124, 77, 74, 7_000, 97, 98, 80, 0.5),
    "hypertensive": Profile(146, 94, 82, 4_000, 96, 118, 95, 2.8),
    "tachycardic": Profile(128, 82, 106, 3_500, 93, 135, 88, 0.0),
    "hypoxic": Profile(132, 85, 88, 2_500, 90, 150, 101, 1.0),
}


def _stamp(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def data_point(
    user_ref: str, type_: str, when: datetime, body: dict[str, Any], rid: str | None = None
) -> dict[str, Any]:
    if type_ == "step-count":
        frame: dict[str, Any] = {
            "time_interval": {
                "start_date_time": _stamp(when - timedelta(days=1)),
                "end_date_time": _stamp(when),
            }
        }
    else:
        frame = {"date_time": _stamp(when)}
    return {
        "header": {
            "id": rid or str(uuid.uuid4()),
            "creation_date_time": _stamp(when),
            "schema_id": {"namespace": "omh", "name": type_, "version": SENT_VERSIONS[type_]},
            "acquisition_provenance": {"source_name": "vitals-simulator", "modality": "sensed"},
            "user_id": user_ref,
        },
        "body": {**body, "effective_time_frame": frame},
    }


def device_day(
    rng: random.Random,
    user_ref: str,
    profile: Profile,
    day: datetime,
    days_before_now: int,
    types: tuple[str, ...],
) -> Iterator[dict[str, Any]]:
    """One device's readings for one day."""
    trend = profile.weight_trend * (30 - days_before_now) / 30
    morning = day + timedelta(hours=7, minutes=rng.randint(0, 59))
    evening = day + timedelta(hours=20, minutes=rng.randint(0, 59))
    if "blood-pressure" in types:
        yield data_point(
            user_ref,
            "blood-pressure",
            morning,
            {
                "systolic_blood_pressure": {
                    "value": round(rng.gauss(profile.systolic, 6)),
                    "unit": "mmHg",
                },
                "diastolic_blood_pressure": {
                    "value": round(rng.gauss(profile.diastolic, 4)),
                    "unit": "mmHg",
                },
            },
        )
    if "heart-rate" in types:
        for t in (morning, evening):
            yield data_point(
                user_ref,
                "heart-rate",
                t,
                {
                    "heart_rate": {
                        "value": round(rng.gauss(profile.resting_hr, 5)),
                        "unit": "beats/min",
                    }
                },
            )
    if "oxygen-saturation" in types:
        yield data_point(
            user_ref,
            "oxygen-saturation",
            morning,
            {
                "oxygen_saturation": {
                    "value": round(min(100.0, rng.gauss(profile.spo2, 1.0)), 1),
                    "unit": "%",
                }
            },
        )
    if "blood-glucose" in types:
        mmol = rng.random() < 0.5  # half the meters report mmol/L
        mg = rng.gauss(profile.glucose, 10)
        yield data_point(
            user_ref,
            "blood-glucose",
            morning,
            {
                "blood_glucose": {
                    "value": round(mg / 18.0156, 1) if mmol else round(mg),
                    "unit": "mmol/L" if mmol else "mg/dL",
                },
                "temporal_relationship_to_meal": "fasting",
            },
        )
    if "body-weight" in types and days_before_now % 2 == 0:
        kg = rng.gauss(profile.weight + trend, 0.3)
        lb = rng.random() < 0.3
        yield data_point(
            user_ref,
            "body-weight",
            morning,
            {
                "body_weight": {
                    "value": round(kg / 0.45359237, 1) if lb else round(kg, 1),
                    "unit": "lb" if lb else "kg",
                }
            },
        )
    if "step-count" in types:
        yield data_point(
            user_ref,
            "step-count",
            day + timedelta(hours=23, minutes=59),
            {
                "step_count": {
                    "value": max(0, round(rng.gauss(profile.steps, 1500))),
                    "unit": "steps",
                }
            },
        )
    if "geoposition" in types and rng.random() < 0.3:
        yield data_point(
            user_ref,
            "geoposition",
            evening,
            {
                "latitude": {"value": round(rng.uniform(60.0, 60.3), 5), "unit": "deg"},
                "longitude": {"value": round(rng.uniform(24.7, 25.2), 5), "unit": "deg"},
            },
        )


def bad_payloads(rng: random.Random, user_ref: str, now: datetime) -> list[dict[str, Any]]:
    """A few readings every real fleet sends: broken, impossible, from the future."""
    return [
        data_point(
            user_ref, "heart-rate", now, {"heart_rate": {"value": 72, "unit": "beats/fortnight"}}
        ),
        data_point(
            user_ref, "heart-rate", now, {"heart_rate": {"value": 900, "unit": "beats/min"}}
        ),
        data_point(
            user_ref,
            "heart-rate",
            now + timedelta(days=2),
            {"heart_rate": {"value": 70, "unit": "beats/min"}},
        ),
        {
            "header": {
                "id": str(uuid.uuid4()),
                "user_id": user_ref,
                "creation_date_time": _stamp(now),
                "schema_id": {"namespace": "omh", "name": "sleep-duration", "version": "1.0"},
            },
            "body": {"sleep_duration": {"value": 7, "unit": "h"}},
        },
        {"header": {"id": str(uuid.uuid4())}, "body": "not a body"},
    ]
