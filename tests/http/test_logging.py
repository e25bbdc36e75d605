"""`vitals serve`'s own stderr, as an operator's log collector reads it: one JSON
object per line, even for an internal error or a database error, and neither
exception messages nor tracebacks nor the values they quote."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import orjson
import psycopg

from tests.support.http import make_world
from tests.support.seed import data_point
from tests.support.serve import ServeProcess, serve_env


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}\n---\n{text}") from None
    return parsed


def _post(proc: ServeProcess, provider_id: str, secret: str, body: bytes) -> httpx.Response:
    from ingest.http.signatures import sign

    return httpx.post(
        proc.url(f"/v1/providers/{provider_id}/readings"),
        content=body,
        headers={"Content-Type": "application/json", "Vitals-Signature": sign(secret, body)},
        timeout=30,
    )


def test_an_internal_error_is_logged_as_json_without_its_message(
    db_url: str, conn: psycopg.Connection, master_key: bytes, tmp_path: Path
) -> None:
    world = make_world(conn, master_key)
    # A provider secret that no longer decrypts (say, after a botched key change).
    conn.execute(
        "UPDATE providers SET webhook_secret_enc = 'not-a-fernet-token-7391'::bytea "
        "WHERE provider_id = %s",
        (world.provider_id,),
    )
    conn.commit()
    point = data_point(world.user_ref)
    with ServeProcess(serve_env(db_url), tmp=tmp_path) as proc:
        r = _post(proc, world.provider_id, world.secret, orjson.dumps([point]))
        assert r.status_code == 500
    text = proc.stderr_text()
    lines = _json_lines(text)
    errors = [line for line in lines if line["level"] == "error"]
    assert errors and all("exception" in line for line in errors), text
    for leaked in ("Traceback", "not-a-fernet-token-7391", world.user_ref, point["header"]["id"]):
        assert leaked not in text


def test_a_database_error_is_logged_as_json_without_the_failing_row(
    db_url: str, conn: psycopg.Connection, master_key: bytes, tmp_path: Path
) -> None:
    world = make_world(conn, master_key)
    # The database refuses the row, quoting it ("Failing row contains (...)").
    conn.execute("ALTER TABLE readings ADD CONSTRAINT no_heart_rates CHECK (type <> 'heart-rate')")
    conn.commit()
    point = data_point(world.user_ref)
    with ServeProcess(serve_env(db_url), tmp=tmp_path) as proc:
        r = _post(proc, world.provider_id, world.secret, orjson.dumps([point]))
        assert r.status_code == 500
        assert r.json()["error"] == "storage_error"
    text = proc.stderr_text()
    lines = _json_lines(text)
    assert any(line.get("event") == "storage_error" for line in lines), text
    for leaked in ("Traceback", "Failing row", "no_heart_rates", world.subject_id, world.user_ref):
        assert leaked not in text
    assert point["header"]["id"] not in text
