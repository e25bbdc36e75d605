"""The demo's simulated devices send what the gate accepts, and their bad
payloads are refused for the reasons a real fleet's would be (no I/O)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from demo.simulator import PROFILES, bad_payloads, device_day
from schemas import (
    FUTURE_TIMESTAMP,
    IMPLAUSIBLE_VALUE,
    TYPES,
    UNSUPPORTED_TYPE,
    Reading,
    Refusal,
    parse_data_point,
)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_simulated_reading_is_valid(profile: str) -> None:
    rng = random.Random(1752)
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    points = [
        pt
        for back in range(30, 0, -1)
        for pt in device_day(
            rng, "dev-1", PROFILES[profile], today - timedelta(days=back), back, TYPES
        )
    ]
    parsed = [parse_data_point(pt, now=now) for pt in points]
    assert [p for p in parsed if not isinstance(p, Reading)] == []
    assert {p.type for p in parsed if isinstance(p, Reading)} >= {
        "heart-rate",
        "blood-pressure",
        "blood-glucose",
        "body-weight",
        "oxygen-saturation",
        "step-count",
    }


def test_bad_payloads_are_refused() -> None:
    now = datetime.now(UTC)
    parsed = [parse_data_point(pt, now=now) for pt in bad_payloads(random.Random(1), "d", now)]
    assert all(isinstance(p, Refusal) for p in parsed)
    reasons = {p.reason for p in parsed if isinstance(p, Refusal)}
    assert {IMPLAUSIBLE_VALUE, FUTURE_TIMESTAMP, UNSUPPORTED_TYPE} <= reasons
