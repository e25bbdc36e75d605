"""Credentials: the bootstrap token's length, API tokens that expire, and the
least-privilege database role the application connects as."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from tests.support.http import ADMIN_TOKEN, Api, running_app


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with running_app(db_url) as a:
        yield a


def vitals(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


# The bootstrap admin token --------------------------------------------------------------


@pytest.mark.parametrize("token", ["tok3n", "x" * 31, "change-me-change-me-change-me-change-me"])
def test_serve_refuses_a_short_or_placeholder_admin_token_with_exit_2(
    cli_env: dict[str, str], token: str
) -> None:
    done = vitals({**cli_env, "VITALS_ADMIN_TOKEN": token}, "serve", "--port", "0")
    assert done.returncode == 2, done.stderr
    assert b"VITALS_ADMIN_TOKEN" in done.stderr
    assert token.encode() not in done.stderr


# Token expiry ------------------------------------------------------------------------------


def test_token_create_expires_in_90_days_by_default_or_as_asked(
    cli_env: dict[str, str], conn: psycopg.Connection
) -> None:
    default = vitals(cli_env, "token", "create", "ops", "--role", "dpo")
    assert default.returncode == 0, default.stderr
    week = vitals(
        cli_env, "token", "create", "contractor", "--role", "analyst", "--expires-in", "7"
    )
    assert week.returncode == 0, week.stderr
    now = datetime.now(UTC)
    for done, days in ((default, 90), (week, 7)):
        out = orjson.loads(done.stdout)
        expires = datetime.fromisoformat(out["expires_at"])
        assert abs(expires - (now + timedelta(days=days))) < timedelta(minutes=5)
    rows = dict(conn.execute("SELECT name, expires_at FROM api_tokens").fetchall())
    assert rows["contractor"] < rows["ops"]
    for bad in ("0", "-1", "366"):
        refused = vitals(
            cli_env, "token", "create", f"bad{bad}", "--role", "dpo", "--expires-in", bad
        )
        assert refused.returncode == 1, refused.stderr
        assert b"invalid_expiry" in refused.stderr


def test_an_expired_token_is_401(api: Api, conn: psycopg.Connection) -> None:
    r = api.client.post(
        "/v1/tokens",
        json={"name": "shortlived", "role": "dpo", "expires_in_days": 1},
        headers=api.auth(ADMIN_TOKEN),
    )
    assert r.status_code == 201, r.text
    token, token_id = r.json()["token"], r.json()["token_id"]
    assert datetime.fromisoformat(r.json()["expires_at"]) < datetime.now(UTC) + timedelta(days=2)
    assert api.client.get("/v1/audit", headers=api.auth(token)).status_code == 200
    # a day later
    conn.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' "
        "WHERE token_hash = decode(%s, 'hex')",
        (token_id,),
    )
    conn.commit()
    r = api.client.get("/v1/audit", headers=api.auth(token))
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"
    listed = api.client.get("/v1/tokens", headers=api.auth(ADMIN_TOKEN)).json()
    assert [t["name"] for t in listed] == ["shortlived"] and listed[0]["expires_at"]


@pytest.mark.parametrize("days", [0, 366])
def test_the_api_refuses_an_expiry_out_of_range(api: Api, days: int) -> None:
    r = api.client.post(
        "/v1/tokens",
        json={"name": "x", "role": "dpo", "expires_in_days": days},
        headers=api.auth(ADMIN_TOKEN),
    )
    assert r.status_code == 422, r.text
