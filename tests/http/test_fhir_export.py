"""`GET /v1/subjects/{id}/export?format=fhir` on the real server: the FHIR R4
Bundle as `application/fhir+json`, role `dpo` only, the JSON extract as
before, an unknown format refused with a reason code."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import psycopg

from store.writer import Writer
from tests.rights.fhir_world import build_person, check_bundle
from tests.support.http import ADMIN_TOKEN, running_app


def test_export_format_fhir(
    db_url: str, conn: psycopg.Connection, master_key: bytes, writer: Writer, tmp_path: Path
) -> None:
    person = build_person(conn, master_key, writer, db_url, tmp_path / "exports")
    url = f"/v1/subjects/{person.subject}/export"
    with running_app(db_url) as api:
        admin = api.auth(ADMIN_TOKEN)
        tokens = {
            role: api.client.post(
                "/v1/tokens", json={"name": f"{role}-f", "role": role}, headers=admin
            ).json()["token"]
            for role in ("dpo", "analyst")
        }
        dpo = api.auth(tokens["dpo"])
        assert api.client.get(url, params={"format": "fhir"}).status_code == 401
        denied = api.client.get(url, params={"format": "fhir"}, headers=api.auth(tokens["analyst"]))
        assert denied.status_code == 403

        plain = api.client.get(url, headers=dpo)
        assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
        json_doc = orjson.loads(plain.content)
        assert json_doc["format"] == "vitals-subject-extract/1"
        as_json = api.client.get(url, params={"format": "json"}, headers=dpo)
        assert orjson.loads(as_json.content)["readings"] == json_doc["readings"]

        got = api.client.get(url, params={"format": "fhir"}, headers=dpo)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "application/fhir+json"
        assert got.headers["content-disposition"].endswith(f'subject-{person.subject}.fhir.json"')
        check_bundle(got.content, orjson.loads(got.content), person, json_doc)

        bad = api.client.get(url, params={"format": "xml"}, headers=dpo)
        assert bad.status_code == 400
        assert bad.json()["error"] == "invalid_format"
        missing = api.client.get(
            f"/v1/subjects/{uuid.uuid4()}/export", params={"format": "fhir"}, headers=dpo
        )
        assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    audited = conn.execute(
        "SELECT actor FROM audit_log WHERE action = 'subject.extract'"
        " AND detail->>'format' = 'fhir'"
    ).fetchall()
    assert len(audited) == 1 and audited[0][0] != "cli"
