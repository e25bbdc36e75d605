"""Subject rights on real PostgreSQL: extract, corrections, resumable erasure."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from core.errors import NotFound
from rights import correction, erasure, extract
from schemas.reading import Component, Reading
from store.db import q
from store.writer import Writer
from tests.support import seed
from tests.support.pgtools import pg_dump_data

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
USER_REF = "user-ref-qz81xk"


def hr(rid: str, user: str = USER_REF, value: float = 64.0) -> Reading:
    return Reading(
        rid, user, "heart-rate", NOW, (Component("heart_rate", value, "/min", value, "beats/min"),)
    )


def no_pseudonym(salt: bytes, subject_id: str) -> str:
    raise AssertionError("no exports in this test")


@pytest.fixture
def person(conn: psycopg.Connection, master_key: bytes, writer: Writer) -> dict[str, str]:
    pid = seed.provider(conn, master_key, ("heart-rate", "blood-pressure"))["provider_id"]
    sid = seed.subject(conn, pid, USER_REF, residency="FI")
    cid = seed.consent(conn, sid, provider_id=pid, types=["heart-rate"])
    seed.consent(conn, sid, "analytics")
    out = writer.write(
        [(pid, hr(f"r{i}", value=60 + i)) for i in range(30)]
        + [
            (
                pid,
                Reading(
                    "bp",
                    USER_REF,
                    "blood-pressure",
                    NOW,
                    (Component("systolic_blood_pressure", 120, "mm[Hg]", 120, "mmHg"),),
                ),
            )
        ],
        "test",
    )
    assert [o.status for o in out].count("accepted") == 30
    conn.execute(
        "INSERT INTO group_memberships (subject_id, group_key, rule_version, evidence, "
        "valid_from) VALUES (%s, 'heart_rate_high', 'v1', '{\"median\": 101}', now())",
        (sid,),
    )
    conn.commit()
    return {"provider": pid, "subject": sid, "consent": cid}


def test_extract_holds_everything(conn: psycopg.Connection, person: dict) -> None:
    buf = io.BytesIO()
    counts = extract.write_extract(conn, person["subject"], buf, actor="dpo-test")
    doc = orjson.loads(buf.getvalue())
    assert doc["subject"]["subject_id"] == person["subject"]
    assert doc["subject"]["residency"] == "FI"
    assert doc["links"] == [
        {
            "provider_id": person["provider"],
            "user_ref": USER_REF,
            "created_at": doc["links"][0]["created_at"],
        }
    ]
    assert [c["purpose"] for c in doc["consents"]] == ["collection", "analytics"]
    assert len(doc["readings"]) == 30 and counts["readings"] == 30
    r0 = doc["readings"][0]
    assert {r0["unit"], r0["orig_unit"], r0["component"]} == {"/min", "beats/min", "heart_rate"}
    assert doc["groups"][0]["group_key"] == "heart_rate_high"
    assert doc["groups"][0]["evidence"] == {"median": 101}
    assert [r["reason"] for r in doc["rejections"]] == ["no_consent"]
    assert doc["disclosures"] == []
    audit = conn.execute(
        "SELECT actor, action FROM audit_log WHERE subject_ref = %s AND action = 'subject.extract'",
        (person["subject"],),
    ).fetchall()
    assert audit == [("dpo-test", "subject.extract")]


def test_corrections_write_before_and_after(conn: psycopg.Connection, person: dict) -> None:
    correction.correct_subject(conn, person["subject"], "dpo", residency="EU")
    correction.correct_reading(
        conn, person["subject"], person["provider"], "r3", "dpo", action="erroneous"
    )
    correction.correct_reading(
        conn, person["subject"], person["provider"], "r4", "dpo", action="delete"
    )
    assert conn.execute("SELECT residency FROM subjects").fetchone() == ("EU",)
    assert conn.execute("SELECT erroneous FROM readings WHERE reading_id = 'r3'").fetchone() == (
        True,
    )
    assert conn.execute("SELECT count(*) FROM readings WHERE reading_id = 'r4'").fetchone() == (0,)
    rows = conn.execute(
        "SELECT action, detail FROM audit_log WHERE action IN "
        "('subject.correct', 'reading.erroneous', 'reading.delete') "
        "ORDER BY audit_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["subject.correct", "reading.erroneous", "reading.delete"]
    assert rows[0][1]["before"]["residency"] == "FI"
    assert rows[0][1]["after"]["residency"] == "EU"
    with pytest.raises(NotFound):
        correction.correct_reading(
            conn, person["subject"], person["provider"], "nope", "dpo", action="delete"
        )


def dump(db_url: str) -> str:
    return pg_dump_data(db_url)


@pytest.mark.parametrize(
    "crash_after", [None, "begin", "queue_exports", "readings", "rest", "audit"]
)
def test_erasure_leaves_nothing_and_resumes(
    db_url: str,
    conn: psycopg.Connection,
    master_key: bytes,
    writer: Writer,
    person: dict,
    crash_after: str | None,
) -> None:
    sid, pid = person["subject"], person["provider"]
    correction.correct_subject(conn, sid, "dpo", relationship_end=NOW)
    assert sid in dump(db_url) and USER_REF in dump(db_url)
    if crash_after:
        with pytest.raises(RuntimeError, match="injected crash"):
            erasure.erase_subject(
                db_url, master_key, sid, "dpo", pseudonym=no_pseudonym, crash_after=crash_after
            )
        # Half-erased: new readings are refused already.
        assert writer.write([(pid, hr("mid"))], "test")[0].reason == "unknown_subject"
    receipt = erasure.erase_subject(db_url, master_key, sid, "dpo", pseudonym=no_pseudonym)
    assert receipt["completed_at"] and not receipt["already_erased"]
    assert receipt["counts"]["readings"] == 30
    assert receipt["counts"]["consents"] == 2

    text = dump(db_url)
    assert sid not in text and sid.replace("-", "") not in text
    assert USER_REF not in text
    shash = erasure.subject_hash(master_key, sid)
    conn.commit()
    assert (
        conn.execute("SELECT count(*) FROM audit_log WHERE subject_ref = %s", (shash,)).fetchone()[
            0
        ]
        >= 4
    )  # type: ignore[index]
    assert conn.execute("SELECT erased_by FROM erasure_receipts").fetchall() == [("dpo",)]
    # Afterwards the provider's user ref is unknown.
    assert writer.write([(pid, hr("after"))], "test")[0].reason == "unknown_subject"
    # Idempotent.
    again = erasure.erase_subject(db_url, master_key, sid, "dpo", pseudonym=no_pseudonym)
    assert again["already_erased"] and again["subject_hash"] == shash


def test_erase_unknown_subject_is_refused(db_url: str, master_key: bytes) -> None:
    with pytest.raises(NotFound):
        erasure.erase_subject(db_url, master_key, "5b0e8a8e-0000-4000-8000-000000000000", "dpo")


def test_cli_extract_to_file(cli_env: dict, person: dict, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "extract.json"
    out.write_bytes(b"an older file, world-readable")
    out.chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        r = _extract_cli(cli_env, person, out)
    finally:
        os.umask(old_umask)
    assert r.returncode == 0, r.stderr
    assert orjson.loads(r.stdout)["readings"] == 30
    assert len(orjson.loads(out.read_bytes())["readings"]) == 30
    # Issue 13: an extract holds everything about a person: owner-only.
    assert out.stat().st_mode & 0o777 == 0o600
    fresh = tmp_path / "fresh.json"
    old_umask = os.umask(0o022)
    try:
        assert _extract_cli(cli_env, person, fresh).returncode == 0
    finally:
        os.umask(old_umask)
    assert fresh.stat().st_mode & 0o777 == 0o600


def _extract_cli(cli_env: dict, person: dict, out) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "subject",
            "export",
            person["subject"],
            "--out",
            str(out),
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _waiting(db_url: str, event: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as watch:
        return watch.execute(  # type: ignore[no-any-return]
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = %s",
            (event,),
        ).fetchone()[0]


def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_erasure_last_step_waits_for_a_concurrent_batch(
    db_url: str, conn: psycopg.Connection, master_key: bytes, person: dict
) -> None:
    """A batch running while erasure deletes the subject's rejections and links
    (step 4) records a rejection carrying the subject id; the erasure must not
    finish before that batch and must take its rejection along.

    Two connections, ordered by hand: erasure's step 4 is held inside its
    transaction by a test-only trigger on `links` that waits for an advisory
    lock this test holds; the batch (the writer's own lock and decide
    statements) runs meanwhile; then the lock is released."""
    sid, pid = person["subject"], person["provider"]
    conn.execute(
        "CREATE FUNCTION test_hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_advisory_xact_lock(4242); RETURN OLD; END $$"
    )
    conn.execute(
        "CREATE TRIGGER test_hold BEFORE DELETE ON links FOR EACH ROW EXECUTE FUNCTION test_hold()"
    )
    conn.commit()
    results: dict[str, Any] = {}

    def erase() -> None:
        try:
            results["receipt"] = erasure.erase_subject(
                db_url, master_key, sid, "dpo", pseudonym=no_pseudonym
            )
        except BaseException as e:  # reported below
            results["erase_error"] = e

    def batch() -> None:
        try:
            with psycopg.connect(db_url) as b:
                b.execute(q("create_staging"))
                b.execute(
                    "INSERT INTO staging_readings VALUES (0, %s, 'late-batch', %s, "
                    "'heart-rate', %s, NULL)",
                    (pid, USER_REF, NOW),
                )
                b.execute(q("lock_batch_subjects")).fetchall()
                results["decided"] = b.execute(q("decide_batch"), {"transport": "test"}).fetchall()
                b.commit()
        except BaseException as e:  # reported below
            results["batch_error"] = e

    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(4242)")
        eraser = threading.Thread(target=erase)
        eraser.start()
        _until(lambda: _waiting(db_url, "advisory") == 1, "erasure never reached step 4")
        writer_thread = threading.Thread(target=batch)
        writer_thread.start()
        # The batch either completes (it got in during step 4) or waits for the
        # subject's lock; either way it has done what it can before step 4 goes on.
        _until(
            lambda: not writer_thread.is_alive() or _waiting(db_url, "transactionid") > 0,
            "the batch neither finished nor waited",
        )
        holder.execute("SELECT pg_advisory_unlock(4242)")
        eraser.join(30)
        writer_thread.join(30)
    assert "erase_error" not in results and "batch_error" not in results, results
    assert results["receipt"]["completed_at"]
    assert [d[1] for d in results["decided"]] == ["unknown_subject"]
    conn.rollback()
    left = conn.execute("SELECT count(*) FROM rejections WHERE subject_id = %s", (sid,)).fetchone()
    conn.rollback()
    assert left == (0,)
    text = dump(db_url)
    assert sid not in text and USER_REF not in text
