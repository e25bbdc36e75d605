"""Storage outages (503, nothing stored, recovery without restart) and `vitals serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from core.errors import SettingsError
from ingest.http.app import create_app
from tests.support.http import (
    ADMIN_TOKEN,
    Api,
    TcpProxy,
    World,
    count,
    make_world,
    running_app,
    settings_for,
    via_proxy,
)
from tests.support.net import free_port
from tests.support.seed import data_point


@pytest.fixture
def proxy(db_url: str) -> Iterator[TcpProxy]:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    p = TcpProxy(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    p.start()
    yield p
    p.stop()


def _post_until(api: Api, world: World, points: list[Any], want: int) -> httpx.Response:
    """The pool reconnects in the background; allow it a few seconds."""
    deadline = time.monotonic() + 15
    while True:
        r = api.post_readings(world, points)
        if r.status_code == want or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_database_outage_is_503_with_nothing_stored_then_recovers_without_restart(
    db_url: str, proxy: TcpProxy, conn: psycopg.Connection, master_key: bytes
) -> None:
    world = make_world(conn, master_key)
    other = make_world(conn, master_key)  # its secret is not cached when the outage starts
    with running_app(via_proxy(db_url, proxy.port), pool_timeout=1.0) as api:
        assert api.post_readings(world, [data_point(world.user_ref)]).status_code == 200
        assert api.client.get("/readyz").status_code == 200

        proxy.stop()
        during = [data_point(world.user_ref, value=70 + i) for i in range(3)]
        r = api.post_readings(world, during)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"].isdigit()
        assert r.json()["error"] == "unavailable"
        r = api.post_readings(other, [data_point(other.user_ref)])
        assert r.status_code == 503, r.text
        ready = api.client.get("/readyz")
        assert ready.status_code == 503
        assert api.client.get("/healthz").status_code == 200
        assert api.client.get("/v1/providers", headers=api.auth(ADMIN_TOKEN)).status_code == 503
        assert count(conn, "readings", "provider_id = %s", (world.provider_id,)) == 1
        assert count(conn, "rejections") == 0

        proxy.start()  # same port: the app is not restarted
        r = _post_until(api, world, during, 200)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 3
        assert count(conn, "readings", "provider_id = %s", (world.provider_id,)) == 4
        assert api.client.get("/readyz").status_code == 200
        assert api.post_readings(other, [data_point(other.user_ref)]).status_code == 200


def test_dead_database_from_the_start(
    db_url: str, conn: psycopg.Connection, master_key: bytes
) -> None:
    world = make_world(conn, master_key)
    dead = via_proxy(db_url, free_port())  # nothing listens there
    with running_app(dead, pool_timeout=0.5) as api:
        assert api.client.get("/healthz").status_code == 200
        assert api.client.get("/readyz").status_code == 503
        r = api.post_readings(world, [data_point(world.user_ref)])
        assert r.status_code == 503 and "Retry-After" in r.headers
    assert count(conn, "readings") == 0


def _serve_env(db_url: str, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    env.update({"VITALS_DATABASE_URL": db_url, "VITALS_SECRET_KEY": key})
    return env


@pytest.mark.parametrize("key", ["change-me", "short-key-123", "x" * 40, ""])
def test_the_app_refuses_a_placeholder_or_short_key(db_url: str, key: str) -> None:
    with pytest.raises(SettingsError, match="VITALS_SECRET_KEY"):
        create_app(settings_for(db_url, secret_key=key or None))


def test_vitals_serve_refuses_a_placeholder_key_before_listening(db_url: str) -> None:
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--port", str(port)],
        env=_serve_env(db_url, "replace-with-a-long-random-key"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "VITALS_SECRET_KEY" in proc.stderr


def test_vitals_serve_answers_and_drains_on_sigterm(
    db_url: str, conn: psycopg.Connection, master_key: bytes
) -> None:
    world = make_world(conn, master_key)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=_serve_env(db_url, master_key.decode()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=base, timeout=10) as client:
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "vitals serve did not become ready"
                time.sleep(0.1)
            api = Api(base, client, None, None)  # type: ignore[arg-type]
            r = api.post_readings(world, [data_point(world.user_ref)])
            assert r.status_code == 200 and r.json()["accepted"] == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # logs are JSON lines on stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), lines[:3]
    assert world.user_ref not in err
