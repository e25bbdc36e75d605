"""Subject rights over the real HTTP server: role checks, extract, correction,
erasure and purge, each audited."""

from __future__ import annotations

from pathlib import Path

import orjson
import psycopg
import pyarrow.parquet as pq

from flows.export import MANIFEST, export_salt, pseudonym, run_export
from tests.integration.test_http_helpers import ADMIN_TOKEN, make_world, running_app
from tests.support import seed


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
