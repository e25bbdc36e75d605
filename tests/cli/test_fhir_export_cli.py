"""`vitals subject export SUBJECT_ID --format fhir` as an operator runs it: the
FHIR R4 Bundle on stdout or in `--out`, `--format json` unchanged, a bad
format a usage error (exit 2)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import psycopg

from store.writer import Writer
from tests.rights.fhir_world import build_person, check_bundle

VITALS = Path(sys.executable).with_name("vitals")


def test_subject_export_fhir(
    cli_env: dict[str, str],
    conn: psycopg.Connection,
    master_key: bytes,
    writer: Writer,
    db_url: str,
    tmp_path: Path,
) -> None:
    person = build_person(conn, master_key, writer, db_url, tmp_path / "exports")

    def vitals(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(VITALS), "subject", "export", person.subject, *args],
            env=cli_env,
            capture_output=True,
            timeout=120,
        )

    plain = vitals()
    assert plain.returncode == 0, plain.stderr
    json_doc = json.loads(plain.stdout)
    assert json_doc["format"] == "vitals-subject-extract/1"
    assert json.loads(vitals("--format", "json").stdout)["readings"] == json_doc["readings"]

    done = vitals("--format", "fhir")
    assert done.returncode == 0, done.stderr
    check_bundle(done.stdout, json.loads(done.stdout), person, json_doc)

    out = tmp_path / "subject.fhir.json"
    done = vitals("--format", "fhir", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "subject_id": person.subject,
        "out": str(out),
        "consents": 4,
        "objections": 2,
        "partner_disclosures": 1,
        "readings": len(json_doc["readings"]),
        "observations": 10,
    }
    raw = out.read_bytes()
    check_bundle(raw, json.loads(raw), person, json_doc)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    bad = vitals("--format", "xml")
    assert bad.returncode == 2
    assert b"invalid choice" in bad.stderr and bad.stdout == b""
    actions = conn.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'subject.extract'"
        " AND detail->>'format' = 'fhir' AND actor = 'cli'"
    ).fetchone()
    assert actions == (2,)
