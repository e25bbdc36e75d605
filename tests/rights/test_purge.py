"""The purge of past exports on real PostgreSQL and real files: the queue that
erasure, research withdrawal and residency correction fill; a purge that fails
loudly on missing files; erasure complete only when purged; an erasure racing
a running export."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow.parquet as pq

from core.outputs import MANIFEST, pseudonym
from flows.export import export_salt, run_export
from rights import correction, erasure
from rights.purge import purge_exports
from store import registry as store_registry
from tests.flows.helpers import Registry, Subject
from tests.support.pgtools import pg_dump_data

D1 = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
D2 = datetime(2026, 1, 11, 23, 30, tzinfo=UTC)


def pseudonyms_in(root: Path) -> set[str]:
    manifest = orjson.loads((root / MANIFEST).read_bytes())
    found: set[str] = set()
    for f in manifest["files"]:
        table = pq.read_table(root / f["path"])
        assert table.num_rows == f["rows"]
        found |= set(table["pseudonym"].to_pylist())
    return found


def queue(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    conn.commit()
    return conn.execute(
        "SELECT export_id, cause, subject_id, pseudonym IS NOT NULL, attempts, last_error"
        " FROM export_purge_queue ORDER BY export_id, cause"
    ).fetchall()


def people(registry: Registry, n: int = 2, **kwargs: Any) -> list[Subject]:
    out = []
    for i in range(n):
        s = registry.subject(("collection", "analytics", "research"), **kwargs)
        registry.readings(s, "heart-rate", [(D1, 60 + i), (D2, 70 + i)])
        out.append(s)
    return out


def test_erasure_is_complete_only_when_every_export_is_purged(
    db_url: str,
    conn: psycopg.Connection,
    master_key: bytes,
    registry: Registry,
    export_dir: Path,
    cli_env: dict[str, str],
) -> None:
    gone, kept = people(registry)
    exports = [run_export(db_url, master_key, export_dir) for _ in range(2)]
    mine = [
        pseudonym(export_salt(conn, master_key, e["export_id"]), gone.subject_id) for e in exports
    ]

    receipt = erasure.erase_subject(db_url, master_key, gone.subject_id, "dpo")
    assert receipt["status"] == "pending_purge" and receipt["completed_at"] is None
    assert receipt["database_erased_at"] and receipt["exports_pending_purge"] == 2
    assert sorted(q[0] for q in queue(conn)) == sorted(e["export_id"] for e in exports)

    # One export's file is gone (a volume not mounted, a file deleted): the purge
    # fails loudly, the others are purged, the entry stays with the error.
    lost = Path(exports[0]["path"])
    hidden = lost.with_name(lost.name + ".away")
    lost.rename(hidden)
    r = subprocess.run(
        [sys.executable, "-m", "cli", "export", "purge"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    assert "purge failed for export " + exports[0]["export_id"] in r.stderr
    out = orjson.loads(r.stdout)
    assert out["status"] == "failed"
    assert [f["export_id"] for f in out["failed"]] == [exports[0]["export_id"]]
    assert "_manifest.json" in out["failed"][0]["error"]
    assert [p["export_id"] for p in out["exports_purged"]] == [exports[1]["export_id"]]
    left = queue(conn)
    assert [(q[0], q[1], q[4]) for q in left] == [(exports[0]["export_id"], "erasure", 1)]
    assert "_manifest.json" in left[0][5]
    assert mine[1] not in pseudonyms_in(Path(exports[1]["path"]))
    receipt = erasure.erase_subject(db_url, master_key, gone.subject_id, "dpo")
    assert receipt["already_erased"] and receipt["status"] == "pending_purge"
    assert receipt["completed_at"] is None and receipt["exports_pending_purge"] == 1

    # A file listed in the manifest missing: the same, and nothing is rewritten.
    hidden.rename(lost)
    before = (lost / MANIFEST).read_bytes()
    manifest = orjson.loads(before)
    part = lost / manifest["files"][0]["path"]
    part_away = part.with_name("away")
    part.rename(part_away)
    result = purge_exports(db_url, master_key, actor="test")
    assert result["status"] == "failed" and "missing" in result["failed"][0]["error"]
    assert (lost / MANIFEST).read_bytes() == before  # nothing rewritten
    part_away.rename(part)

    result = purge_exports(db_url, master_key, actor="test")
    assert result["status"] == "done" and result["pending"] == {"entries": 0, "exports": 0}
    assert [p["export_id"] for p in result["exports_purged"]] == [exports[0]["export_id"]]
    assert mine[0] not in pseudonyms_in(lost)
    assert pseudonym(export_salt(conn, master_key, exports[0]["export_id"]), kept.subject_id) in (
        pseudonyms_in(lost)
    )
    receipt = erasure.erase_subject(db_url, master_key, gone.subject_id, "dpo")
    assert receipt["status"] == "complete" and receipt["completed_at"]
    assert receipt["exports_pending_purge"] == 0
    assert queue(conn) == []


def test_an_erasure_without_exports_is_complete_at_once(
    db_url: str, master_key: bytes, registry: Registry
) -> None:
    (gone,) = people(registry, 1)
    receipt = erasure.erase_subject(db_url, master_key, gone.subject_id, "dpo")
    assert receipt["status"] == "complete" and receipt["completed_at"]


def test_research_withdrawal_queues_a_purge(
    db_url: str,
    conn: psycopg.Connection,
    master_key: bytes,
    registry: Registry,
    export_dir: Path,
) -> None:
    leaving, staying = people(registry)
    e = run_export(db_url, master_key, export_dir)
    salt = export_salt(conn, master_key, e["export_id"])
    assert queue(conn) == []

    store_registry.withdraw_consent(conn, leaving.consents["research"], "test")
    conn.commit()
    assert [(q[0], q[1], str(q[2])) for q in queue(conn)] == [
        (e["export_id"], "research_withdrawn", leaving.subject_id)
    ]
    result = purge_exports(db_url, master_key, actor="test")
    assert result["status"] == "done" and len(result["exports_purged"]) == 1
    assert pseudonyms_in(Path(e["path"])) == {pseudonym(salt, staying.subject_id)}
    assert queue(conn) == []
    # Marked purged in the disclosure log: the next run finds nothing to do.
    assert purge_exports(db_url, master_key, actor="test")["exports_purged"] == []


def test_residency_correction_queues_a_purge_of_eu_exports(
    db_url: str,
    conn: psycopg.Connection,
    master_key: bytes,
    registry: Registry,
    export_dir: Path,
) -> None:
    moving, staying = people(registry)
    eu = run_export(db_url, master_key, export_dir, "EU")
    fi = run_export(db_url, master_key, export_dir, "FI")

    correction.correct_subject(conn, moving.subject_id, "dpo", residency="FI")
    assert [(q[0], q[1]) for q in queue(conn)] == [(eu["export_id"], "residency")]
    purge_exports(db_url, master_key, actor="test")
    eu_salt = export_salt(conn, master_key, eu["export_id"])
    fi_salt = export_salt(conn, master_key, fi["export_id"])
    assert pseudonyms_in(Path(eu["path"])) == {pseudonym(eu_salt, staying.subject_id)}
    assert pseudonyms_in(Path(fi["path"])) == {
        pseudonym(fi_salt, s.subject_id) for s in (moving, staying)
    }
    assert queue(conn) == []


def test_an_erasure_racing_an_export_leaves_nothing_once_purged(
    db_url: str,
    conn: psycopg.Connection,
    master_key: bytes,
    registry: Registry,
    export_dir: Path,
) -> None:
    gone, kept = people(registry)
    reached, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def hold(rows: int) -> None:  # the export, mid-way through writing readings
        reached.set()
        assert release.wait(60)

    def run(name: str, fn: Any) -> None:
        try:
            results[name] = fn()
        except BaseException as e:  # re-raised in the test
            results[name] = e

    exporting = threading.Thread(
        target=run,
        args=("export", lambda: run_export(db_url, master_key, export_dir, progress=hold)),
    )
    erasing = threading.Thread(
        target=run,
        args=("erase", lambda: erasure.erase_subject(db_url, master_key, gone.subject_id, "dpo")),
    )
    exporting.start()
    try:
        assert reached.wait(60)
        erasing.start()
        # The erasure either runs to the end, or waits for the export: both
        # are a fixed point to let the export go on from.
        deadline = time.monotonic() + 60
        while erasing.is_alive():
            conn.commit()
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            ).fetchone()[0]  # type: ignore[index]
            if waiting:
                break
            assert time.monotonic() < deadline, "erasure neither finished nor waited"
            time.sleep(0.05)
    finally:
        release.set()
        exporting.join(120)
        if erasing.is_alive() or erasing.ident is not None:
            erasing.join(120)
    for name in ("export", "erase"):
        if isinstance(results[name], BaseException):
            raise results[name]
    export, receipt = results["export"], results["erase"]

    purge_exports(db_url, master_key, actor="test")
    salt = export_salt(conn, master_key, export["export_id"])
    assert pseudonyms_in(Path(export["path"])) == {pseudonym(salt, kept.subject_id)}
    text = pg_dump_data(db_url)
    assert gone.subject_id not in text and gone.user_ref not in text
    assert kept.subject_id in text
    # The export committed first, with the subject: the erasure waited for it
    # and queued it, so it was complete only after that purge.
    assert receipt["status"] == "pending_purge" and receipt["completed_at"] is None
    assert receipt["exports_pending_purge"] == 1
    conn.commit()
    assert conn.execute("SELECT status FROM erasure_receipts").fetchall() == [("complete",)]


def test_purge_forgets_disclosures_of_subjects_that_no_longer_exist(
    db_url: str,
    conn: psycopg.Connection,
    master_key: bytes,
    registry: Registry,
    export_dir: Path,
) -> None:
    """The re-check behind the lock: whatever left a raw subject id in the
    disclosure log of someone who is gone, the purge takes it and its rows out."""
    gone, kept = people(registry)
    e = run_export(db_url, master_key, export_dir)
    salt = export_salt(conn, master_key, e["export_id"])
    erasure.erase_subject(db_url, master_key, gone.subject_id, "dpo")
    # As if an export had committed it after the erasure (the old race).
    conn.execute(
        "INSERT INTO export_subjects (export_id, subject_id) VALUES (%s, %s)",
        (e["export_id"], gone.subject_id),
    )
    conn.execute("DELETE FROM export_purge_queue")
    conn.commit()
    purge_exports(db_url, master_key, actor="test")
    assert pseudonyms_in(Path(e["path"])) == {pseudonym(salt, kept.subject_id)}
    assert gone.subject_id not in pg_dump_data(db_url)
