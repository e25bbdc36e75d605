"""`vitals serve` with TLS and a separate admin listener, as compose runs it: a
real process, a self-signed certificate, real HTTPS requests."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.http import ADMIN_TOKEN, make_world
from tests.support.net import free_port
from tests.support.seed import data_point
from tests.support.serve import ServeProcess, self_signed, serve_env


def test_https_public_listener_serves_only_the_webhook_and_health(
    db_url: str, conn: psycopg.Connection, master_key: bytes, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    world = make_world(conn, master_key)
    conn.commit()
    admin_port = free_port()
    env = serve_env(db_url, VITALS_ADMIN_TOKEN=ADMIN_TOKEN)
    args = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--admin-port", str(admin_port))
    with (
        ServeProcess(env, *args, tmp=tmp_path, scheme="https", verify=trust) as proc,
        httpx.Client(verify=trust, timeout=30) as client,
    ):
        # the webhook over HTTPS, verified against the certificate
        r = proc.post_readings(world, [data_point(world.user_ref)], client)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
        assert client.get(proc.url("/healthz")).status_code == 200
        assert client.get(proc.url("/readyz")).json() == {"status": "ready"}
        # nothing else on the public listener, with or without a token
        bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for path in ("/metrics", "/docs", "/openapi.json", "/redoc", "/v1/providers", "/v1/audit"):
            for headers in ({}, bearer):
                r = client.get(proc.url(path), headers=headers)
                assert r.status_code == 404, (path, r.status_code)
                assert r.json()["error"] == "not_found"
        r = client.post(proc.url("/v1/tokens"), json={"name": "x", "role": "admin"}, headers=bearer)
        assert r.status_code == 404
        # no cleartext
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{proc.port}/healthz", timeout=5)
        # the admin listener, also TLS: admin API, docs and metrics
        assert client.get(proc.url("/metrics", admin_port)).status_code == 200
        assert "vitals_http_request_seconds" in client.get(proc.url("/metrics", admin_port)).text
        assert client.get(proc.url("/docs", admin_port)).status_code == 200
        assert client.get(proc.url("/v1/providers", admin_port)).status_code == 401
        r = client.get(proc.url("/v1/providers", admin_port), headers=bearer)
        assert r.status_code == 200, r.text
        assert [p["provider_id"] for p in r.json()] == [world.provider_id]


def test_serve_refuses_half_a_tls_configuration(cli_env: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    cert, _key = self_signed(tmp_path)
    for args in (
        ["--ssl-certfile", str(cert)],
        ["--ssl-certfile", str(cert), "--ssl-keyfile", str(tmp_path / "missing.key")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "cli", "serve", "--port", "0", *args],
            env=cli_env,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
