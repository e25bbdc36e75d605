"""Suspending or removing a provider disables its broker account; activating it
again lets it back in (CLI, real Mosquitto, real PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.mqtt import connect_reason, start_broker


def vitals(env: dict[str, str], *args: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_provider_status_follows_to_the_broker(cli_env: dict[str, str], tmp_path: Path) -> None:
    with start_broker(tmp_path / "broker") as broker:
        env = {**cli_env, "VITALS_MQTT_ADMIN_URL": broker.admin_url}
        p = vitals(env, "provider", "add", "acme", "--types", "heart-rate")
        assert p["mqtt"]["topic"] == f"vitals/v1/{p['provider_id']}/readings"
        device = broker.url(p["mqtt"]["username"], p["mqtt"]["password"])
        assert connect_reason(device).is_failure is False

        for status in ("suspended", "removed"):
            assert vitals(env, "provider", "status", p["provider_id"], status)["status"] == status
            assert connect_reason(device).is_failure, f"a {status} provider must not connect"
        vitals(env, "provider", "status", p["provider_id"], "active")
        assert connect_reason(device).is_failure is False
