"""Subject rights over the real HTTP server: role checks, extract, correction,
erasure and purge, each audited."""

from __future__ import annotations

from pathlib import Path

import orjson
import psycopg
import pyarrow.parquet as pq

from core.outputs import MANIFEST, pseudonym
from flows.export import export_salt, run_export
from tests.support import seed
from tests.support.http import ADMIN_TOKEN, make_world, running_app
from tests.support.pgtools import pg_dump_data


def test_rights_endpoints(db_url: str, conn: psycopg.Connection, master_key: bytes) -> None:
    world = make_world(conn, master_key, types=("heart-rate",), user_ref="http-rights-ref-1")
    with running_app(db_url) as api:
        admin_h = api.auth(ADMIN_TOKEN)
        dpo = api.client.post(
            "/v1/tokens", json={"name": "dpo-1", "role": "dpo"}, headers=admin_h
        ).json()["token"]
        analyst = api.client.post(
            "/v1/tokens", json={"name": "an-1", "role": "analyst"}, headers=admin_h
        ).json()["token"]
        r = api.post_readings(
            world, [seed.data_point(world.user_ref, id=f"h{i}") for i in range(3)]
        )
        assert r.json()["accepted"] == 3

        sid = world.subject_id
        assert api.client.get(f"/v1/subjects/{sid}/export").status_code == 401
        assert (
            api.client.get(f"/v1/subjects/{sid}/export", headers=api.auth(analyst)).status_code
            == 403
        )
        got = api.client.get(f"/v1/subjects/{sid}/export", headers=api.auth(dpo))
        assert got.status_code == 200
        doc = orjson.loads(got.content)
        assert doc["subject"]["subject_id"] == sid and len(doc["readings"]) == 3

        fixed = api.client.patch(
            f"/v1/subjects/{sid}", json={"residency": "FI"}, headers=api.auth(dpo)
        )
        assert fixed.status_code == 200 and fixed.json()["residency"] == "FI"
        marked = api.client.post(
            f"/v1/subjects/{sid}/readings/correct",
            json={"provider_id": world.provider_id, "reading_id": "h0", "action": "erroneous"},
            headers=api.auth(dpo),
        )
        assert marked.status_code == 200, marked.text
        missing = api.client.post(
            f"/v1/subjects/{sid}/readings/correct",
            json={"provider_id": world.provider_id, "reading_id": "nope", "action": "delete"},
            headers=api.auth(dpo),
        )
        assert missing.status_code == 404

        erased = api.client.delete(f"/v1/subjects/{sid}", headers=api.auth(dpo))
        assert erased.status_code == 200 and erased.json()["completed_at"]
        assert api.client.delete(f"/v1/subjects/{sid}", headers=api.auth(dpo)).json()[
            "already_erased"
        ]
        purged = api.client.post("/v1/exports/purge", headers=api.auth(dpo))
        assert purged.status_code == 200 and purged.json()["exports_purged"] == []
        assert purged.json()["status"] == "done"
        again = api.post_readings(world, [seed.data_point(world.user_ref, id="after")])
        assert again.json()["results"][0]["reason"] == "unknown_subject"

    actions = [
        r[0]
        for r in conn.execute(
            "SELECT action FROM audit_log WHERE actor = 'token:dpo-1' ORDER BY audit_id"
        )
    ]
    assert actions[:3] == ["subject.extract", "subject.correct", "reading.erroneous"]
    assert "subject.erase" in actions


def test_purge_endpoint_never_answers_done_when_nothing_happened(
    db_url: str, conn: psycopg.Connection, master_key: bytes, tmp_path: Path
) -> None:
    """Issue 2: the API runs the purge where it sees the export root, says it
    queued it where it does not, and fails loudly on missing files."""
    world = make_world(conn, master_key, types=("heart-rate",))
    seed.consent(conn, world.subject_id, "research")
    kept = make_world(conn, master_key, types=("heart-rate",))
    seed.consent(conn, kept.subject_id, "research")
    root = tmp_path / "exports"
    with running_app(db_url, export_dir=tmp_path / "not-mounted") as api:
        for w in (world, kept):
            r = api.post_readings(w, [seed.data_point(w.user_ref, id=f"x{i}") for i in range(2)])
            assert r.json()["accepted"] == 2
        export = run_export(db_url, master_key, root)
        gone = pseudonym(export_salt(conn, master_key, export["export_id"]), world.subject_id)
        admin_h = api.auth(ADMIN_TOKEN)
        dpo = api.auth(
            api.client.post(
                "/v1/tokens", json={"name": "dpo-2", "role": "dpo"}, headers=admin_h
            ).json()["token"]
        )
        erased = api.client.delete(f"/v1/subjects/{world.subject_id}", headers=dpo).json()
        assert erased["status"] == "pending_purge" and erased["completed_at"] is None

        queued = api.client.post("/v1/exports/purge", headers=dpo)
        assert queued.status_code == 202, queued.text
        assert queued.json()["status"] == "queued"
        assert queued.json()["pending"] == {"entries": 1, "exports": 1}
        assert gone in pseudonyms(Path(export["path"]))  # nothing happened yet

    manifest = orjson.loads((Path(export["path"]) / MANIFEST).read_bytes())
    part = Path(export["path"]) / manifest["files"][0]["path"]
    part.rename(part.with_name("moved"))
    with running_app(db_url, export_dir=root) as api:
        dpo = api.auth(
            api.client.post(
                "/v1/tokens", json={"name": "dpo-3", "role": "dpo"}, headers=api.auth(ADMIN_TOKEN)
            ).json()["token"]
        )
        failed = api.client.post("/v1/exports/purge", headers=dpo)
        assert failed.status_code == 500 and failed.json()["status"] == "failed"
        assert "missing" in failed.json()["failed"][0]["error"]
        part.with_name("moved").rename(part)

        done = api.client.post("/v1/exports/purge", headers=dpo)
        assert done.status_code == 200 and done.json()["status"] == "done"
        assert [p["export_id"] for p in done.json()["exports_purged"]] == [export["export_id"]]
        receipt = api.client.delete(f"/v1/subjects/{world.subject_id}", headers=dpo).json()
        assert receipt["status"] == "complete" and receipt["completed_at"]
    assert gone not in pseudonyms(Path(export["path"]))
    assert pseudonym(export_salt(conn, master_key, export["export_id"]), kept.subject_id) in (
        pseudonyms(Path(export["path"]))
    )


def pseudonyms(root: Path) -> set[str]:
    return {p for f in root.rglob("*.parquet") for p in pq.read_table(f)["pseudonym"].to_pylist()}


def test_audit_keeps_nothing_of_an_erased_subject(
    db_url: str, conn: psycopg.Connection, master_key: bytes
) -> None:
    """Corrections, reading marks, extracts and audit searches (with the subject
    id in upper case and without hyphens), then erasure: no audit entry, and no
    row anywhere, holds the subject id in any form, its reading ids or user refs;
    reading entries keep keyed hashes and lose the provider id beside them."""
    from rights import correction, erasure
    from store import registry

    user_ref, second_ref = "aud-erase-ref-k3v9", "aud-erase-second-k3v9"
    world = make_world(conn, master_key, types=("heart-rate",), user_ref=user_ref)
    sid = world.subject_id
    forms = [sid, sid.upper(), sid.replace("-", ""), sid.replace("-", "").upper()]
    rids = [f"aud-reading-k3v9-{i}" for i in range(3)]
    # An entry written before this fix could hold the id as typed (upper case),
    # in subject_ref and in its detail.
    conn.execute(
        "INSERT INTO audit_log (actor, action, subject_ref, detail) VALUES "
        "('legacy', 'audit.read', %s, %s), ('legacy', 'reading.delete', %s, %s)",
        (
            sid.upper(),
            orjson.dumps({"filters": {"subject_ref": sid.upper()}}).decode(),
            sid.upper(),
            orjson.dumps({"reading_id": rids[2], "provider_id": world.provider_id}).decode(),
        ),
    )
    # A caller naming the subject in another form, in subject_ref and detail.
    registry.audit(conn, "dpo", "note", "{" + sid.upper() + "}", about=forms[3])
    registry.audit(conn, "dpo", "search", None, query=f"urn:uuid:{sid.upper()}")
    conn.commit()
    with running_app(db_url) as api:
        dpo = api.auth(
            api.client.post(
                "/v1/tokens", json={"name": "dpo-a", "role": "dpo"}, headers=api.auth(ADMIN_TOKEN)
            ).json()["token"]
        )
        r = api.post_readings(world, [seed.data_point(user_ref, id=rid) for rid in rids])
        assert r.json()["accepted"] == 3
        up = sid.upper()
        assert api.client.get(f"/v1/subjects/{up}", headers=dpo).status_code == 200
        assert api.client.get(f"/v1/subjects/{up}/export", headers=dpo).status_code == 200
        for rid, action in ((rids[0], "erroneous"), (rids[1], "delete")):
            r = api.client.post(
                f"/v1/subjects/{up}/readings/correct",
                json={"provider_id": world.provider_id, "reading_id": rid, "action": action},
                headers=dpo,
            )
            assert r.status_code == 200, r.text
        link = {"provider_id": world.provider_id, "user_ref": second_ref}
        assert api.client.patch(
            f"/v1/subjects/{up}", json={"add_links": [link]}, headers=dpo
        ).is_success
        assert api.client.patch(
            f"/v1/subjects/{up}", json={"remove_links": [link]}, headers=dpo
        ).is_success
        for form in forms:
            found = api.client.get("/v1/audit", params={"subject": form}, headers=dpo).json()
            assert len(found) >= 6  # found whatever form the id was typed in
        correction.correct_reading(
            conn, sid.upper(), world.provider_id, rids[2], "dpo", action="valid"
        )

        assert api.client.delete(f"/v1/subjects/{up}", headers=dpo).status_code == 200
        # Searching for the erased subject afterwards finds its entries by hash
        # and records the hash, not the id.
        after = api.client.get("/v1/audit", params={"subject": up}, headers=dpo).json()
        shash = erasure.subject_hash(master_key, sid)
        assert after and {e["subject_ref"] for e in after} == {shash}

    conn.rollback()
    audit_text = "\n".join(
        f"{ref} {detail}"
        for ref, detail in conn.execute("SELECT subject_ref, detail::text FROM audit_log")
    )
    reading_entries = conn.execute(
        "SELECT detail FROM audit_log WHERE detail ? 'reading_id'"
    ).fetchall()
    conn.rollback()
    dumped = pg_dump_data(db_url)
    for text in (audit_text, dumped):
        for secret in [*forms, *rids, user_ref, second_ref]:
            assert secret not in text and secret.lower() not in text.lower(), secret
    assert len(reading_entries) == 4  # legacy, erroneous, delete, valid
    for (detail,) in reading_entries:
        assert detail["reading_id"].startswith("erased:") and "provider_id" not in detail
    assert shash in audit_text


def test_purge_endpoint_purges_exports_on_s3(
    db_url: str, conn: psycopg.Connection, master_key: bytes, s3_export_dir: str
) -> None:
    """With an s3:// export root the API sees the root wherever the bucket is
    reachable, so it purges there itself (tests/support/s3.py: moto on loopback)."""
    import pyarrow.fs as pafs

    world = make_world(conn, master_key, types=("heart-rate",))
    seed.consent(conn, world.subject_id, "research")
    with running_app(db_url, export_dir=s3_export_dir) as api:
        r = api.post_readings(
            world, [seed.data_point(world.user_ref, id=f"s{i}") for i in range(2)]
        )
        assert r.json()["accepted"] == 2
        export = run_export(db_url, master_key, s3_export_dir)
        assert export["path"].startswith("s3://") and export["rows"] == 2
        dpo = api.auth(
            api.client.post(
                "/v1/tokens", json={"name": "dpo-s3", "role": "dpo"}, headers=api.auth(ADMIN_TOKEN)
            ).json()["token"]
        )
        erased = api.client.delete(f"/v1/subjects/{world.subject_id}", headers=dpo).json()
        assert erased["status"] == "pending_purge"
        done = api.client.post("/v1/exports/purge", headers=dpo)
        assert done.status_code == 200 and done.json()["status"] == "done", done.text
        assert done.json()["exports_purged"][0]["rows_removed"] == 2
    fs, base = pafs.FileSystem.from_uri(export["path"])
    with fs.open_input_stream(f"{base}/{MANIFEST}") as f:
        manifest = orjson.loads(f.read())
    assert manifest["rows"]["readings"] == 0 and manifest["purged_at"]
    assert [e["path"] for e in manifest["files"]] == ["groups/part-00000.parquet"]
