"""`vitals db migrate` on an empty database, twice: the second run changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

from store.migrate import available, pending

SCHEMA_SNAPSHOT = """
SELECT table_name, column_name, data_type FROM information_schema.columns
WHERE table_schema = 'public' ORDER BY 1, 2
"""


def vitals(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_twice_changes_nothing(empty_db: str) -> None:
    env = {**os.environ, "VITALS_DATABASE_URL": empty_db}
    first = vitals("db", "migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["applied"] == [m.path.name for m in available()]
    with psycopg.connect(empty_db) as c:
        before = c.execute(SCHEMA_SNAPSHOT).fetchall()
        assert pending(c) == []
    second = vitals("db", "migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {"applied": []}
    with psycopg.connect(empty_db) as c:
        assert c.execute(SCHEMA_SNAPSHOT).fetchall() == before
        assert c.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(available()),)


def test_plain_postgres_gets_brin_index(db_url: str) -> None:
    with psycopg.connect(db_url) as c:
        has_ts = c.execute(
            "SELECT count(*) FROM pg_extension WHERE extname='timescaledb'"
        ).fetchone()
        idx = c.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname='readings_time_brin'"
        ).fetchone()
    if has_ts == (0,):
        assert idx is not None and "brin" in idx[0]


def test_consents_are_append_only(conn: psycopg.Connection, master_key: bytes) -> None:
    from tests.support import seed

    pid = seed.provider(conn, master_key)["provider_id"]
    sid = seed.subject(conn, pid, "u")
    seed.consent(conn, sid)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE consents SET purpose = 'research'")
    conn.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM consents")
    conn.rollback()


def test_missing_database_url_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    r = vitals("db", "migrate", env=env)
    assert r.returncode == 2
    assert "VITALS_DATABASE_URL" in r.stderr


def test_cli_registry_commands_and_exit_codes(cli_env: dict[str, str]) -> None:
    """The contract's registry commands, with --link given both ways."""
    import json

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return vitals(*args, env=cli_env)

    p1 = json.loads(run("provider", "add", "p-one", "--types", "heart-rate").stdout)
    p2 = json.loads(run("provider", "add", "p-two", "--types", "heart-rate").stdout)
    assert set(p1) == {"provider_id", "webhook_secret", "standard_webhooks_secret", "mqtt"}
    assert p1["mqtt"] is None
    both = run(
        "subject",
        "add",
        "--residency",
        "FI",
        "--link",
        f"{p1['provider_id']}:a",
        f"{p2['provider_id']}:b",
    )
    assert both.returncode == 0, both.stderr
    repeated = run(
        "subject",
        "add",
        "--residency",
        "EU",
        "--link",
        f"{p1['provider_id']}:c",
        "--link",
        f"{p2['provider_id']}:d",
    )
    sid = json.loads(repeated.stdout)["subject_id"]
    grant = run(
        "consent",
        "grant",
        sid,
        "--purpose",
        "collection",
        "--provider",
        p1["provider_id"],
        "--types",
        "heart-rate",
        "--from",
        "2026-01-01T00:00Z",
    )
    cid = json.loads(grant.stdout)["consent_id"]
    assert run("consent", "withdraw", cid).returncode == 0
    assert (
        run("subject", "add", "--residency", "EU", "--link", f"{p1['provider_id']}:a").returncode
        == 1
    )  # that user ref is linked already: a refused input
    assert run("consent", "grant", sid, "--purpose", "advertising").returncode == 2  # usage
    assert run("provider", "add", "p-three", "--types", "heart-rate,teleportation").returncode == 1
