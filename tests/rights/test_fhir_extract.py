"""The access extract as a FHIR R4 Bundle (`rights.fhir`) on real PostgreSQL:
valid against the FHIR models, the same content as the JSON extract, streamed,
audited; the JSON extract unchanged."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from core.errors import NotFound
from rights import extract, fhir
from store.writer import Writer
from tests.rights.fhir_world import Person, build_person, check_bundle, resources


@pytest.fixture
def person(
    conn: psycopg.Connection, master_key: bytes, writer: Writer, db_url: str, export_dir: Path
) -> Person:
    return build_person(conn, master_key, writer, db_url, export_dir)


def _json_extract(conn: psycopg.Connection, sid: str) -> dict[str, Any]:
    buf = io.BytesIO()
    extract.write_extract(conn, sid, buf, actor="dpo-test")
    doc: dict[str, Any] = orjson.loads(buf.getvalue())
    return doc


def test_fhir_extract_is_a_valid_bundle_of_everything(
    conn: psycopg.Connection, person: Person
) -> None:
    buf = io.BytesIO()
    counts = fhir.write_fhir_extract(conn, person.subject, buf, actor="dpo-test")
    raw = buf.getvalue()
    doc = orjson.loads(raw)
    json_doc = _json_extract(conn, person.subject)
    check_bundle(raw, doc, person, json_doc)
    assert len(json_doc["consents"]) == 4
    assert counts == {
        "consents": len(json_doc["consents"]),
        "objections": 2,
        "partner_disclosures": 1,
        "readings": len(json_doc["readings"]),
        "observations": 10,
    }
    audit = conn.execute(
        "SELECT actor, detail FROM audit_log WHERE action = 'subject.extract'"
        " AND subject_ref = %s ORDER BY audit_id",
        (person.subject,),
    ).fetchall()
    assert [(a, d.get("format")) for a, d in audit] == [("dpo-test", "fhir"), ("dpo-test", None)]
    assert audit[0][1]["counts"] == counts


def test_json_extract_is_unchanged(conn: psycopg.Connection, person: Person) -> None:
    doc = _json_extract(conn, person.subject)
    assert doc["format"] == "vitals-subject-extract/1"
    assert list(doc) == [
        "format",
        "subject",
        "links",
        "consents",
        "groups",
        "rejections",
        "disclosures",
        "objections",
        "partner_disclosures",
        "readings",
    ]


def test_readings_are_streamed_one_entry_each(
    conn: psycopg.Connection, person: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries are written as the cursor yields them: a failure half way has
    already written the earlier Observations (nothing is held back)."""
    writes: list[bytes] = []

    class Out(io.BytesIO):
        def write(self, b: Any) -> int:
            writes.append(bytes(b))
            return super().write(b)

    real = fhir.observation
    seen = 0

    def failing(rows: list[dict[str, Any]], ref: str) -> tuple[str, dict[str, Any]]:
        nonlocal seen
        seen += 1
        if seen == 5:
            raise RuntimeError("stop")
        return real(rows, ref)

    monkeypatch.setattr(fhir, "observation", failing)
    with pytest.raises(RuntimeError):
        fhir.write_fhir_extract(conn, person.subject, Out(), actor="dpo-test")
    conn.rollback()
    assert sum(b'"Observation"' in w for w in writes) == 4


def test_subject_without_anything(conn: psycopg.Connection, person: Person) -> None:
    from tests.support import seed

    sid = seed.subject(conn, person.provider, "someone-else")
    buf = io.BytesIO()
    counts = fhir.write_fhir_extract(conn, sid, buf, actor="dpo-test")
    doc = orjson.loads(buf.getvalue())
    assert counts["observations"] == counts["consents"] == 0
    assert [e["resource"]["resourceType"] for e in doc["entry"]] == ["Patient"]
    assert resources(doc, "Patient")[0]["id"] == sid


def test_unknown_subject(conn: psycopg.Connection) -> None:
    with pytest.raises(NotFound):
        fhir.write_fhir_extract(conn, str(uuid.uuid4()), io.BytesIO(), actor="dpo-test")
