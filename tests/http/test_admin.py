"""The admin API on a real server: roles, the bootstrap token, consents, audit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.http import ADMIN_TOKEN, Api, World, count, running_app
from tests.support.seed import data_point


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with running_app(db_url) as a:
        yield a


def _token(api: Api, role: str) -> str:
    r = api.client.post(
        "/v1/tokens", json={"name": f"{role}-1", "role": role}, headers=api.auth(ADMIN_TOKEN)
    )
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def _audit(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    conn.rollback()
    return conn.execute(
        "SELECT actor, action, subject_ref, detail FROM audit_log ORDER BY audit_id"
    ).fetchall()


def test_missing_or_unknown_token_is_401(api: Api) -> None:
    r = api.client.get("/v1/providers")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert r.json()["error"] == "unauthenticated"
    assert api.client.get("/v1/providers", headers=api.auth("vt_nope")).status_code == 401
    assert api.client.get(f"/v1/subjects/{uuid.uuid4()}").status_code == 401


def test_roles_are_enforced(api: Api) -> None:
    analyst, dpo = _token(api, "analyst"), _token(api, "dpo")
    sid = api.client.post("/v1/subjects", json={"residency": "EU"}, headers=api.auth(dpo)).json()[
        "subject_id"
    ]
    # an analyst reads export manifests only
    r = api.client.get(f"/v1/subjects/{sid}", headers=api.auth(analyst))
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    assert api.client.get("/v1/audit", headers=api.auth(analyst)).status_code == 403
    assert (
        api.client.post(
            "/v1/subjects", json={"residency": "EU"}, headers=api.auth(analyst)
        ).status_code
        == 403
    )
    assert api.client.get("/v1/exports", headers=api.auth(analyst)).json() == []
    # a dpo manages subjects, not providers or tokens
    assert api.client.get("/v1/providers", headers=api.auth(dpo)).status_code == 403
    assert (
        api.client.post(
            "/v1/tokens", json={"name": "x", "role": "admin"}, headers=api.auth(dpo)
        ).status_code
        == 403
    )
    assert api.client.get(f"/v1/subjects/{sid}", headers=api.auth(dpo)).status_code == 200


def test_revoked_token_is_refused(api: Api, conn: psycopg.Connection) -> None:
    r = api.client.post(
        "/v1/tokens", json={"name": "temp", "role": "dpo"}, headers=api.auth(ADMIN_TOKEN)
    )
    token, token_id = r.json()["token"], r.json()["token_id"]
    assert api.client.get("/v1/audit", headers=api.auth(token)).status_code == 200
    listed = api.client.get("/v1/tokens", headers=api.auth(ADMIN_TOKEN)).json()
    assert [t["name"] for t in listed] == ["temp"]
    assert "token" not in listed[0]
    r = api.client.delete(f"/v1/tokens/{token_id}", headers=api.auth(ADMIN_TOKEN))
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert api.client.get("/v1/audit", headers=api.auth(token)).status_code == 401
    # stored hashed: the token itself is nowhere in the database
    assert count(conn, "api_tokens", "token_hash::text LIKE %s", (f"%{token}%",)) == 0


def test_provider_lifecycle_and_webhook_secret_from_the_api(
    api: Api, conn: psycopg.Connection
) -> None:
    admin = api.auth(ADMIN_TOKEN)
    r = api.client.post(
        "/v1/providers", json={"name": "Acme", "types": ["heart-rate"]}, headers=admin
    )
    assert r.status_code == 201, r.text
    provider = r.json()
    assert provider["webhook_secret"].startswith("whsec_")
    pid = provider["provider_id"]
    dup = api.client.post(
        "/v1/providers", json={"name": "Acme", "types": ["heart-rate"]}, headers=admin
    )
    assert dup.status_code == 409
    bad = api.client.post("/v1/providers", json={"name": "B", "types": ["nope"]}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"] == "unsupported_type"
    got = api.client.get(f"/v1/providers/{pid}", headers=admin).json()
    assert got["status"] == "active" and "webhook_secret_enc" not in got
    assert [p["provider_id"] for p in api.client.get("/v1/providers", headers=admin).json()] == [
        pid
    ]

    dpo = api.auth(_token(api, "dpo"))
    sid = api.client.post(
        "/v1/subjects",
        json={"residency": "FI", "links": [{"provider_id": pid, "user_ref": "u-1"}]},
        headers=dpo,
    ).json()["subject_id"]
    assert (
        api.client.post(
            f"/v1/subjects/{sid}/consents", json={"purpose": "collection"}, headers=dpo
        ).status_code
        == 201
    )
    world = World(pid, provider["webhook_secret"], "u-1", sid)
    assert api.post_readings(world, [data_point("u-1")]).json()["accepted"] == 1

    r = api.client.patch(f"/v1/providers/{pid}", json={"status": "suspended"}, headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    # the secret cache is invalidated: refused at once
    assert api.post_readings(world, [data_point("u-1")]).status_code == 404
    assert (
        api.client.patch(
            f"/v1/providers/{uuid.uuid4()}", json={"status": "removed"}, headers=admin
        ).status_code
        == 404
    )


def test_subjects_links_and_append_only_consent_history(
    api: Api, conn: psycopg.Connection, master_key: bytes
) -> None:
    admin = api.auth(ADMIN_TOKEN)
    pid = api.client.post(
        "/v1/providers", json={"name": "P", "types": ["heart-rate", "geoposition"]}, headers=admin
    ).json()["provider_id"]
    dpo = api.auth(_token(api, "dpo"))
    r = api.client.post("/v1/subjects", json={"residency": "EU"}, headers=dpo)
    assert r.status_code == 201
    sid = r.json()["subject_id"]
    r = api.client.post(
        f"/v1/subjects/{sid}/links", json={"provider_id": pid, "user_ref": "ref-9"}, headers=dpo
    )
    assert r.status_code == 201
    again = api.client.post(
        f"/v1/subjects/{sid}/links", json={"provider_id": pid, "user_ref": "ref-9"}, headers=dpo
    )
    assert again.status_code == 409
    subject = api.client.get(f"/v1/subjects/{sid}", headers=dpo).json()
    assert subject["residency"] == "EU"
    assert [(x["provider_id"], x["user_ref"]) for x in subject["links"]] == [(pid, "ref-9")]

    grant = api.client.post(
        f"/v1/subjects/{sid}/consents",
        json={
            "purpose": "collection",
            "provider_id": pid,
            "types": ["heart-rate"],
            "from": "2026-01-01T00:00:00Z",
        },
        headers=dpo,
    )
    assert grant.status_code == 201, grant.text
    cid = grant.json()["consent_id"]
    naive = api.client.post(
        f"/v1/subjects/{sid}/consents",
        json={"purpose": "collection", "from": "2026-01-01T00:00:00"},
        headers=dpo,
    )
    assert naive.status_code == 400 and naive.json()["error"] == "invalid_time"
    open_ended = api.client.post(
        f"/v1/subjects/{sid}/consents", json={"purpose": "location"}, headers=dpo
    )
    assert open_ended.status_code == 201

    w = api.client.post(f"/v1/consents/{cid}/withdraw", headers=dpo)
    assert w.status_code == 200 and w.json()["withdrawn_at"]
    assert api.client.post(f"/v1/consents/{uuid.uuid4()}/withdraw", headers=dpo).status_code == 404

    history = api.client.get(f"/v1/subjects/{sid}/consents", headers=dpo).json()
    assert [h["purpose"] for h in history] == ["collection", "location"]
    assert history[0]["withdrawn_at"] is not None and history[0]["types"] == ["heart-rate"]
    assert history[0]["valid_from"].startswith("2026-01-01")
    assert history[1]["valid_from"] is None and history[1]["valid_until"] is None
    # the grant row itself was never changed or removed
    assert count(conn, "consents", "subject_id = %s", (sid,)) == 2

    assert api.client.get(f"/v1/subjects/{uuid.uuid4()}", headers=dpo).status_code == 404
    assert api.client.get("/v1/subjects/not-a-uuid", headers=dpo).status_code == 400


def test_every_admin_and_dpo_action_is_audited(api: Api, conn: psycopg.Connection) -> None:
    admin = api.auth(ADMIN_TOKEN)
    pid = api.client.post(
        "/v1/providers", json={"name": "Audited", "types": ["heart-rate"]}, headers=admin
    ).json()["provider_id"]
    dpo_token = _token(api, "dpo")
    dpo = api.auth(dpo_token)
    sid = api.client.post("/v1/subjects", json={"residency": "EU"}, headers=dpo).json()[
        "subject_id"
    ]
    api.client.post(
        f"/v1/subjects/{sid}/links", json={"provider_id": pid, "user_ref": "r"}, headers=dpo
    )
    cid = api.client.post(
        f"/v1/subjects/{sid}/consents", json={"purpose": "research"}, headers=dpo
    ).json()["consent_id"]
    api.client.post(f"/v1/consents/{cid}/withdraw", headers=dpo)
    api.client.get(f"/v1/subjects/{sid}", headers=dpo)
    api.client.get(f"/v1/subjects/{sid}/consents", headers=dpo)

    rows = _audit(conn)
    actions = [(actor, action) for actor, action, _, _ in rows]
    assert actions == [
        ("admin-token", "provider.add"),
        ("admin-token", "token.create"),
        ("token:dpo-1", "subject.add"),
        ("token:dpo-1", "link.add"),
        ("token:dpo-1", "consent.grant"),
        ("token:dpo-1", "consent.withdraw"),
        ("token:dpo-1", "subject.read"),
        ("token:dpo-1", "consent.read"),
    ]
    assert all(
        ref == sid
        for _, action, ref, _ in rows
        if action.split(".")[0] in ("subject", "link", "consent")
    )

    # the audit log is readable with filters, and reading it is audited too
    found = api.client.get("/v1/audit", params={"subject": sid}, headers=dpo).json()
    assert [r["action"] for r in found] == [
        "consent.read",
        "subject.read",
        "consent.withdraw",
        "consent.grant",
        "link.add",
        "subject.add",
    ]
    only = api.client.get(
        "/v1/audit", params={"action": "consent.grant", "actor": "token:dpo-1"}, headers=dpo
    ).json()
    assert len(only) == 1 and only[0]["detail"]["purpose"] == "research"
    page = api.client.get("/v1/audit", params={"limit": 2}, headers=dpo).json()
    older = api.client.get(
        "/v1/audit", params={"limit": 2, "before": page[-1]["audit_id"]}, headers=dpo
    ).json()
    assert len(page) == 2 and older[0]["audit_id"] < page[-1]["audit_id"]
    assert (
        api.client.get(
            "/v1/audit", params={"since": "2026-01-01T00:00:00"}, headers=dpo
        ).status_code
        == 400
    )
    assert _audit(conn)[-1][1] == "audit.read"
    # no token or personal data in any detail
    assert not any(dpo_token in str(d) for *_, d in _audit(conn))


def test_analyst_reads_export_manifests(api: Api, conn: psycopg.Connection, tmp_path: Any) -> None:
    (tmp_path / "_manifest.json").write_text('{"files": [], "cutoff": "2026-01-01T00:00:00Z"}')
    conn.execute(
        "INSERT INTO exports (export_id, region, cutoff, salt_enc, path) "
        "VALUES ('exp-1', 'EU', now(), '\\x00', %s)",
        (str(tmp_path),),
    )
    conn.commit()
    analyst = api.auth(_token(api, "analyst"))
    listed = api.client.get("/v1/exports", headers=analyst).json()
    assert [e["export_id"] for e in listed] == ["exp-1"] and "path" not in listed[0]
    one = api.client.get("/v1/exports/exp-1", headers=analyst).json()
    assert one["manifest"] == {"files": [], "cutoff": "2026-01-01T00:00:00Z"}
    assert api.client.get("/v1/exports/none", headers=analyst).status_code == 404


def test_location_withdrawal_over_the_api_removes_coordinates(
    api: Api, conn: psycopg.Connection, master_key: bytes, writer: Any
) -> None:
    from tests.store.test_writer import located, located_world

    _, sid, wide, window = located_world(conn, master_key, writer)
    dpo = _token(api, "dpo")
    first = api.client.post(f"/v1/consents/{window}/withdraw", headers=api.auth(dpo))
    assert first.status_code == 200, first.text
    # `wide` still covers everything: nothing goes.
    assert located(conn)[0] == ["geo-1", "geo-2", "geo-4", "geo-6"]
    r = api.client.post(f"/v1/consents/{wide}/withdraw", headers=api.auth(dpo))
    assert r.status_code == 200, r.text
    geos, hrs = located(conn)
    assert geos == [] and hrs == [(f"hr-{h}", False) for h in (1, 2, 4, 6)]
    assert count(conn, "readings", "latitude IS NOT NULL OR longitude IS NOT NULL") == 0
    assert (r.json()["geoposition_readings_deleted"], r.json()["coordinates_cleared"]) == (4, 4)
    assert (first.json()["geoposition_readings_deleted"], first.json()["coordinates_cleared"]) == (
        0,
        0,
    )
    history = api.client.get(f"/v1/subjects/{sid}/consents", headers=api.auth(dpo)).json()
    assert sum(1 for c in history if c["withdrawn_at"]) == 2
