"""Partners and objections over the admin API on a real server: the four
routes, roles, reason codes for bad input (never a 5xx), audit rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.http import ADMIN_TOKEN, Api, running_app


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with running_app(db_url) as a:
        yield a


def _token(api: Api, role: str) -> str:
    r = api.client.post(
        "/v1/tokens", json={"name": f"{role}-p", "role": role}, headers=api.auth(ADMIN_TOKEN)
    )
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def test_partners_admin_only(api: Api, conn: psycopg.Connection) -> None:
    admin, dpo, analyst = api.auth(ADMIN_TOKEN), api.auth(_token(api, "dpo")), None
    analyst = api.auth(_token(api, "analyst"))
    body = {
        "name": "Acme",
        "region": "FI",
        "purposes": ["marketing", "disclosure"],
        "types": ["heart-rate"],
    }
    for who in (dpo, analyst):
        assert api.client.post("/v1/partners", json=body, headers=who).status_code == 403
        assert api.client.get("/v1/partners", headers=who).status_code == 403
    assert api.client.get("/v1/partners").status_code == 401
    r = api.client.post("/v1/partners", json=body, headers=admin)
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"partner_id"}
    pid = r.json()["partner_id"]
    listed = api.client.get("/v1/partners", headers=admin)
    assert listed.status_code == 200
    [p] = listed.json()
    assert (p["partner_id"], p["name"], p["region"], p["purposes"], p["types"]) == (
        pid,
        "Acme",
        "FI",
        ["marketing", "disclosure"],
        ["heart-rate"],
    )
    assert api.client.get(f"/v1/partners/{pid}/notices", headers=admin).json() == []
    # bad input: reason codes, 4xx
    for bad, status, code in (
        ({**body}, 409, "duplicate"),
        ({**body, "name": "B", "region": "US"}, 400, "invalid_region"),
        ({**body, "name": "B", "purposes": ["research"]}, 400, "invalid_purpose"),
        ({**body, "name": "B", "types": ["x-ray"]}, 400, "unsupported_type"),
        ({"name": "B"}, 422, "invalid_body"),
        ({**body, "name": "B", "purposes": "marketing"}, 422, "invalid_body"),
    ):
        r = api.client.post("/v1/partners", json=bad, headers=admin)
        assert (r.status_code, r.json()["error"]) == (status, code), r.text
    r = api.client.post(
        "/v1/partners", content=b"{nope", headers={**admin, "Content-Type": "application/json"}
    )
    assert (r.status_code, r.json()["error"]) == (422, "invalid_body")
    r = api.client.get(f"/v1/partners/{uuid.uuid4()}/notices", headers=admin)
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    conn.rollback()
    actions = [a for (a,) in conn.execute("SELECT action FROM audit_log ORDER BY audit_id")]
    assert "partner.add" in actions and "partner.list" in actions


def test_objections_dpo(api: Api, conn: psycopg.Connection) -> None:
    admin, dpo = api.auth(ADMIN_TOKEN), api.auth(_token(api, "dpo"))
    analyst = api.auth(_token(api, "analyst"))
    sid = api.client.post("/v1/subjects", json={"residency": "EU"}, headers=dpo).json()[
        "subject_id"
    ]
    pid = api.client.post(
        "/v1/partners",
        json={"name": "P", "region": "EU", "purposes": ["disclosure"], "types": ["heart-rate"]},
        headers=admin,
    ).json()["partner_id"]
    url = f"/v1/subjects/{sid}/objections"
    assert api.client.post(url, json={"purpose": "research"}, headers=analyst).status_code == 403
    assert api.client.post(url, json={"purpose": "research"}).status_code == 401
    r = api.client.post(url, json={"purpose": "disclosure", "partner_id": pid}, headers=dpo)
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"objection_id"}
    oid = r.json()["objection_id"]
    r = api.client.post(url, json={"purpose": "marketing"}, headers=admin)  # admin may too
    assert r.status_code == 201
    for bad, status, code in (
        ({"purpose": "analytics"}, 400, "invalid_purpose"),
        ({"purpose": "research", "partner_id": pid}, 400, "invalid_partner"),
        ({"purpose": "disclosure", "partner_id": str(uuid.uuid4())}, 404, "not_found"),
        ({"purpose": "disclosure", "partner_id": "x"}, 400, "invalid_id"),
        ({}, 422, "invalid_body"),
        ({"purpose": 7}, 422, "invalid_body"),
    ):
        r = api.client.post(url, json=bad, headers=dpo)
        assert (r.status_code, r.json()["error"]) == (status, code), r.text
    r = api.client.post(
        f"/v1/subjects/{uuid.uuid4()}/objections", json={"purpose": "research"}, headers=dpo
    )
    assert (r.status_code, r.json()["error"]) == (404, "not_found")

    lift = f"/v1/objections/{oid}/lift"
    assert api.client.post(lift, headers=analyst).status_code == 403
    r = api.client.post(lift, headers=dpo)
    assert r.status_code == 200 and r.json()["objection_id"] == oid and r.json()["lifted_at"]
    assert api.client.post(lift, headers=dpo).json() == r.json()  # idempotent
    r = api.client.post(f"/v1/objections/{uuid.uuid4()}/lift", headers=dpo)
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    r = api.client.post("/v1/objections/nope/lift", headers=dpo)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_id")

    # the extract shows the history; marketing consents are accepted
    r = api.client.post(f"/v1/subjects/{sid}/consents", json={"purpose": "marketing"}, headers=dpo)
    assert r.status_code == 201, r.text
    doc = api.client.get(f"/v1/subjects/{sid}/export", headers=dpo).json()
    assert [(o["purpose"], o["lifted_at"] is not None) for o in doc["objections"]] == [
        ("disclosure", True),
        ("marketing", False),
    ]
    assert doc["partner_disclosures"] == []
