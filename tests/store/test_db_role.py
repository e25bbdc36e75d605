"""The application's database role `vitals_app` (migration 0006): enough to
ingest, administer and erase; not enough to change history or the schema.

The test server's superuser takes the role at connection time
(`options=-c role=vitals_app`), so every statement below, the app's included,
runs with vitals_app's privileges only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.http import ADMIN_TOKEN, count, make_world, running_app
from tests.support.seed import data_point

APP_ROLE = "vitals_app"


def as_app(db_url: str) -> str:
    return psycopg.conninfo.make_conninfo(db_url, options=f"-c role={APP_ROLE}")


@pytest.fixture
def app_conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(as_app(db_url), autocommit=True) as c:
        assert c.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        yield c


def test_the_role_is_no_superuser_and_owns_nothing(app_conn: psycopg.Connection) -> None:
    row = app_conn.execute(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication "
        "FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row == (False, False, False, False, False)
    owned = app_conn.execute(
        "SELECT count(*) FROM pg_class WHERE relowner = current_user::regrole"
    ).fetchone()
    assert owned == (0,)


def test_the_app_ingests_and_administers_as_vitals_app(
    db_url: str, conn: psycopg.Connection, master_key: bytes
) -> None:
    world = make_world(conn, master_key)
    conn.commit()
    with running_app(as_app(db_url)) as api:
        # the webhook and the writer (staging tables, COPY, consent gate)
        r = api.post_readings(world, [data_point(world.user_ref), data_point("nobody")])
        assert r.status_code == 200, r.text
        assert (r.json()["accepted"], r.json()["rejected"]) == (1, 1)
        assert api.client.get("/readyz").json() == {"status": "ready"}
        admin = api.auth(ADMIN_TOKEN)
        # providers, tokens, subjects, links, consents, withdrawals, audit
        r = api.client.post(
            "/v1/providers", json={"name": "Role Co", "types": ["heart-rate"]}, headers=admin
        )
        assert r.status_code == 201, r.text
        pid = r.json()["provider_id"]
        r = api.client.post("/v1/tokens", json={"name": "dpo", "role": "dpo"}, headers=admin)
        assert r.status_code == 201, r.text
        dpo = api.auth(r.json()["token"])
        r = api.client.post(
            "/v1/subjects",
            json={"residency": "EU", "links": [{"provider_id": pid, "user_ref": "u1"}]},
            headers=dpo,
        )
        assert r.status_code == 201, r.text
        sid = r.json()["subject_id"]
        r = api.client.post(
            f"/v1/subjects/{sid}/consents", json={"purpose": "collection"}, headers=dpo
        )
        assert r.status_code == 201, r.text
        cid = r.json()["consent_id"]
        assert api.client.post(f"/v1/consents/{cid}/withdraw", headers=dpo).status_code == 200
        assert api.client.get("/v1/audit", headers=dpo).status_code == 200
        assert api.client.get(f"/v1/subjects/{sid}/export", headers=dpo).status_code == 200
        # erasure deletes consent history through the trigger's erasure switch
        r = api.client.delete(f"/v1/subjects/{world.subject_id}", headers=dpo)
        assert r.status_code == 200, r.text
    assert count(conn, "readings", "provider_id = %s", (world.provider_id,)) == 0
    assert count(conn, "consents", "subject_id = %s", (world.subject_id,)) == 0
    assert count(conn, "consents", "subject_id = %s", (sid,)) == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE consents SET purpose = 'research'",
        "UPDATE consents SET valid_until = now()",
        "DELETE FROM consents",
        "UPDATE consent_withdrawals SET withdrawn_at = now()",
        "DELETE FROM consent_withdrawals",
    ],
)
def test_consent_history_stays_append_only_for_vitals_app(
    db_url: str,
    conn: psycopg.Connection,
    app_conn: psycopg.Connection,
    master_key: bytes,
    statement: str,
) -> None:
    world = make_world(conn, master_key)
    cid = conn.execute("SELECT consent_id FROM consents LIMIT 1").fetchone()
    assert cid is not None
    conn.execute("INSERT INTO consent_withdrawals (consent_id) VALUES (%s)", cid)
    conn.commit()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        app_conn.execute(statement)
    assert count(conn, "consents", "subject_id = %s", (world.subject_id,)) == 2
    assert count(conn, "consent_withdrawals") == 1


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE stash (x int)",
        "CREATE VIEW stash AS SELECT 1",
        "CREATE FUNCTION stash() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "DROP TABLE readings",
        "DROP TRIGGER consents_append_only ON consents",
        "ALTER TABLE consents DISABLE TRIGGER consents_append_only",
        "ALTER TABLE readings ADD COLUMN note text",
        "CREATE OR REPLACE FUNCTION vitals_append_only() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN OLD; END $$",
        "TRUNCATE consents",
        "CREATE INDEX stash_idx ON readings (value)",
        "ALTER ROLE vitals_app SUPERUSER",
        "SET session_replication_role = replica",  # would skip the triggers
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'x', 'x')",
    ],
)
def test_ddl_and_privilege_changes_are_refused(
    app_conn: psycopg.Connection, statement: str
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute(statement)


def test_migrating_again_keeps_the_role_and_its_grants(db_url: str) -> None:
    from store.migrate import migrate

    assert migrate(db_url) == []
    with psycopg.connect(as_app(db_url)) as c:
        assert c.execute("SELECT count(*) FROM readings").fetchone() == (0,)
        c.execute("INSERT INTO audit_log (actor, action) VALUES (%s, 'x')", (str(uuid.uuid4()),))


def test_db_app_role_lets_vitals_app_log_in(db_url: str, cli_env: dict[str, str]) -> None:
    import subprocess
    import sys

    login = psycopg.conninfo.make_conninfo(db_url, user=APP_ROLE, password="x" * 20)
    password = "app-role-password-" + uuid.uuid4().hex
    try:
        with psycopg.connect(db_url, autocommit=True) as su:
            su.execute(f"ALTER ROLE {APP_ROLE} NOLOGIN PASSWORD NULL")
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            psycopg.connect(login).close()
        done = subprocess.run(
            [sys.executable, "-m", "cli", "db", "app-role"],
            env={**cli_env, "VITALS_APP_DATABASE_PASSWORD": password},
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert password.encode() not in done.stdout + done.stderr
        with psycopg.connect(db_url) as su:
            stored = su.execute(
                "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s", (APP_ROLE,)
            ).fetchone()
        assert stored is not None and stored[0] and stored[1].startswith("SCRAM-SHA-256$")
        with psycopg.connect(login) as c:
            assert c.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        short = subprocess.run(
            [sys.executable, "-m", "cli", "db", "app-role"],
            env={**cli_env, "VITALS_APP_DATABASE_PASSWORD": "short"},
            capture_output=True,
            timeout=60,
        )
        assert short.returncode == 2
    finally:  # the role is cluster-wide: leave it as the migration made it
        with psycopg.connect(db_url, autocommit=True) as su:
            su.execute(f"ALTER ROLE {APP_ROLE} NOLOGIN PASSWORD NULL")
