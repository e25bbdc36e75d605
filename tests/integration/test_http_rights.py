"""Subject rights over the real HTTP server: role checks, extract, correction,
erasure and purge, each audited."""

from __future__ import annotations

import orjson
import psycopg

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
        assert purged.status_code == 200 and purged.json() == {"exports_purged": []}
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
