"""Standard Webhooks on the partner webhook (real uvicorn and PostgreSQL),
signed by the `standardwebhooks` package with the `standard_webhooks_secret`
that provider registration prints; `Vitals-Signature` keeps working beside it."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import orjson
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from core.crypto import standard_webhooks_secret
from tests.support.http import ADMIN_TOKEN, Api, World, count, make_world
from tests.support.seed import data_point


@pytest.fixture(scope="module")
def api(shared_api: Api) -> Api:
    return shared_api


@pytest.fixture
def conn(shared_conn: psycopg.Connection) -> psycopg.Connection:
    return shared_conn


@pytest.fixture
def world(conn: psycopg.Connection, master_key: bytes) -> World:
    return make_world(conn, master_key)


def _readings(conn: psycopg.Connection, world: World) -> int:
    return count(conn, "readings", "provider_id = %s", (world.provider_id,))


def headers(
    world: World,
    raw: bytes,
    *,
    msg_id: str | None = None,
    t: int | None = None,
    whsec: str | None = None,
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    t = int(time.time()) if t is None else t
    wh = Webhook(whsec or standard_webhooks_secret(world.secret))
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(t),
        "webhook-signature": wh.sign(msg_id, datetime.fromtimestamp(t, UTC), raw.decode()),
    }


def post(api: Api, world: World, raw: bytes, hdrs: dict[str, str]):  # type: ignore[no-untyped-def]
    return api.client.post(f"/v1/providers/{world.provider_id}/readings", content=raw, headers=hdrs)


def test_a_standard_webhooks_request_is_accepted(
    api: Api, world: World, conn: psycopg.Connection
) -> None:
    raw = orjson.dumps([data_point(world.user_ref)])
    r = post(api, world, raw, headers(world, raw))
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert _readings(conn, world) == 1


def test_several_signatures_one_valid(api: Api, world: World, conn: psycopg.Connection) -> None:
    raw = orjson.dumps([data_point(world.user_ref)])
    h = headers(world, raw)
    wrong = headers(
        world,
        raw,
        msg_id=h["webhook-id"],
        t=int(h["webhook-timestamp"]),
        whsec=standard_webhooks_secret("whsec_an-old-secret"),
    )
    h["webhook-signature"] = f"{wrong['webhook-signature']} {h['webhook-signature']}"
    r = post(api, world, raw, h)
    assert r.status_code == 200, r.text
    assert _readings(conn, world) == 1


@pytest.mark.parametrize(
    "case",
    [
        "wrong_secret",
        "expired",
        "future",
        "no_id",
        "no_timestamp",
        "no_signature",
        "other_body",
    ],
)
def test_bad_standard_signatures_are_401_and_store_nothing(
    api: Api, world: World, conn: psycopg.Connection, case: str
) -> None:
    raw = orjson.dumps([data_point(world.user_ref)])
    now = int(time.time())
    if case == "wrong_secret":
        h = headers(world, raw, whsec=standard_webhooks_secret("whsec_not-the-secret"))
    elif case == "expired":
        h = headers(world, raw, t=now - 301)
    elif case == "future":
        h = headers(world, raw, t=now + 330)
    elif case in ("no_id", "no_timestamp", "no_signature"):
        h = headers(world, raw)
        del h[
            {
                "no_id": "webhook-id",
                "no_timestamp": "webhook-timestamp",
                "no_signature": "webhook-signature",
            }[case]
        ]
    else:  # other_body: the captured headers with another body
        h = headers(world, raw)
        raw = orjson.dumps([data_point(world.user_ref)])
    before = _readings(conn, world)
    r = post(api, world, raw, h)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "bad_signature"
    assert _readings(conn, world) == before


def test_replay_of_the_same_body_under_another_id_is_refused(
    api: Api, world: World, conn: psycopg.Connection
) -> None:
    raw = orjson.dumps([data_point(world.user_ref)])
    h = headers(world, raw)
    assert post(api, world, raw, h).status_code == 200
    h["webhook-id"] = f"msg_{uuid.uuid4().hex}"
    r = post(api, world, raw, h)
    assert r.status_code == 401 and r.json()["error"] == "bad_signature"
    assert _readings(conn, world) == 1


def test_registration_prints_both_forms_of_one_key(api: Api) -> None:
    admin = api.auth(ADMIN_TOKEN)
    r = api.client.post(
        "/v1/providers",
        json={"name": f"sw-{uuid.uuid4().hex[:6]}", "types": ["heart-rate"]},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["standard_webhooks_secret"] == standard_webhooks_secret(p["webhook_secret"])
    assert p["standard_webhooks_secret"].startswith("whsec_")
