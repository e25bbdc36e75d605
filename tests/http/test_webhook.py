"""The signed partner webhook against a real uvicorn server and PostgreSQL."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from prometheus_client import REGISTRY

from core import logs
from ingest.http.signatures import sign
from tests.support.http import Api, World, count, make_world, running_app
from tests.support.seed import data_point


# The module's tests share one database and one server (tests.support.http),
# each test isolated by its own provider.
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


def test_signed_batch_is_committed_before_200_with_results_in_input_order(
    api: Api, world: World, conn: psycopg.Connection
) -> None:
    points = [
        data_point(world.user_ref, "heart-rate", value=61),
        data_point(world.user_ref, "blood-pressure", value=80),
        data_point(world.user_ref, "body-weight", value=70),
    ]
    r = api.post_readings(world, points)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 0, 0)
    assert [x["id"] for x in body["results"]] == [p["header"]["id"] for p in points]
    assert all(
        x == {"id": x["id"], "status": "accepted", "reason": None, "detail": None}
        for x in body["results"]
    )
    # blood pressure is two component rows
    assert _readings(conn, world) == 4
    row = conn.execute(
        "SELECT value, unit FROM readings WHERE reading_id = %s", (points[0]["header"]["id"],)
    ).fetchone()
    assert row is not None and row[0] == 61


def test_one_data_point_without_array(api: Api, world: World, conn: psycopg.Connection) -> None:
    point = data_point(world.user_ref)
    r = api.post_readings(world, point)
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [
        {"id": point["header"]["id"], "status": "accepted", "reason": None, "detail": None}
    ]
    assert _readings(conn, world) == 1


def test_resend_is_reported_as_duplicates_and_stores_nothing_new(
    api: Api, world: World, conn: psycopg.Connection
) -> None:
    points = [data_point(world.user_ref, value=60 + i) for i in range(5)]
    assert api.post_readings(world, points).json()["accepted"] == 5
    again = api.post_readings(world, points + [data_point(world.user_ref)]).json()
    assert (again["accepted"], again["duplicates"]) == (1, 5)
    assert [x["status"] for x in again["results"]] == ["duplicate"] * 5 + ["accepted"]
    assert _readings(conn, world) == 6


def test_empty_array_is_a_no_op(api: Api, world: World) -> None:
    r = api.post_readings(world, [])
    assert r.status_code == 200
    assert r.json() == {"accepted": 0, "duplicates": 0, "rejected": 0, "results": []}


# Signatures -----------------------------------------------------------------------


def _stale() -> int:
    return int(time.time()) - 301


@pytest.mark.parametrize(
    "case", ["missing", "garbled", "wrong_secret", "stale", "future", "replayed_new_body"]
)
def test_bad_signature_is_401_and_stores_nothing(
    api: Api, world: World, conn: psycopg.Connection, case: str
) -> None:
    url = f"/v1/providers/{world.provider_id}/readings"
    raw = orjson.dumps([data_point(world.user_ref)])
    headers = {"Content-Type": "application/json"}
    if case == "garbled":
        headers["Vitals-Signature"] = "v1=abc"
    elif case == "wrong_secret":
        headers["Vitals-Signature"] = sign("whsec_not-the-secret", raw)
    elif case == "stale":
        headers["Vitals-Signature"] = sign(world.secret, raw, _stale())
    elif case == "future":
        # int() truncates up to 1 s and the request takes time: clear the 300 s margin
        headers["Vitals-Signature"] = sign(world.secret, raw, int(time.time()) + 330)
    elif case == "replayed_new_body":
        # A captured, valid header replayed with a different body.
        first = api.post_readings(world, [data_point(world.user_ref)])
        assert first.status_code == 200
        captured = first.request.headers["Vitals-Signature"]
        headers["Vitals-Signature"] = captured
    before = _readings(conn, world)
    r = api.client.post(url, content=raw, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "bad_signature"
    assert _readings(conn, world) == before


# Header bytes arrive decoded as Latin-1, where these are digits to str.isdigit().
@pytest.mark.parametrize("t", ["\u00b2", "\u00b9\u00b3", "1\u00b2"])
def test_non_ascii_digits_in_the_timestamp_are_401_not_500(
    api: Api, world: World, conn: psycopg.Connection, t: str
) -> None:
    raw = orjson.dumps([data_point(world.user_ref)])
    mac = sign(world.secret, raw).partition(",")[2]
    r = api.client.post(
        f"/v1/providers/{world.provider_id}/readings",
        content=raw,
        headers={
            "Content-Type": "application/json",
            "Vitals-Signature": f"t={t},{mac}".encode("latin-1"),
        },
    )
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "bad_signature"
    assert _readings(conn, world) == 0


def _raw_request_headers_only(api: Api, path: str, signature: str | None) -> bytes:
    """Send only the head of a request announcing a 1 MiB body; return what the
    server answers within 5 s without having been sent a byte of the body."""
    host, _, port = api.base_url.removeprefix("http://").partition(":")
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {1024 * 1024}",
    ]
    if signature is not None:
        head.append(f"Vitals-Signature: {signature}")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        answer = b""
        try:
            while b"}" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
        except TimeoutError:
            pass
        return answer


@pytest.mark.parametrize("signature", [None, "v1=abc", "t=abc,v1=abc", "STALE"])
def test_missing_or_garbled_signature_is_401_before_the_body_is_read(
    api: Api, world: World, signature: str | None
) -> None:
    if signature == "STALE":
        signature = sign(world.secret, b"[]", _stale())
    path = f"/v1/providers/{world.provider_id}/readings"
    answer = _raw_request_headers_only(api, path, signature)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"bad_signature" in answer


def test_wrong_hmac_is_401_without_parsing_the_body(api: Api, world: World) -> None:
    raw = b'{"not": json at all'
    headers = {
        "Content-Type": "application/json",
        "Vitals-Signature": sign("whsec_not-the-secret", raw),
    }
    r = api.client.post(f"/v1/providers/{world.provider_id}/readings", content=raw, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json() == {"error": "bad_signature", "detail": "signature does not match"}


def test_signature_within_tolerance_is_accepted(api: Api, world: World) -> None:
    r = api.post_readings(world, [data_point(world.user_ref)], t=int(time.time()) - 290)
    assert r.status_code == 200, r.text


def test_exact_replay_inside_the_window_is_idempotent(api: Api, world: World) -> None:
    raw = orjson.dumps([data_point(world.user_ref)])
    t = int(time.time())
    first = api.post_readings(world, None, body=raw, t=t)
    second = api.post_readings(world, None, body=raw, t=t)
    assert first.json()["accepted"] == 1
    assert second.json()["duplicates"] == 1


# Provider, body and shape errors -----------------------------------------------------


def test_unknown_or_suspended_provider_is_404(
    api: Api, world: World, conn: psycopg.Connection, master_key: bytes
) -> None:
    raw = orjson.dumps(data_point(world.user_ref))
    for pid in (str(uuid.uuid4()), "not-a-uuid", "x" * 300):
        r = api.client.post(
            f"/v1/providers/{pid}/readings",
            content=raw,
            headers={"Vitals-Signature": sign(world.secret, raw)},
        )
        assert r.status_code == 404, (pid, r.text)
        assert r.json()["error"] == "unknown_provider"
    other = make_world(conn, master_key)
    conn.execute(
        "UPDATE providers SET status = 'suspended' WHERE provider_id = %s", (other.provider_id,)
    )
    conn.commit()
    assert api.post_readings(other, [data_point(other.user_ref)]).status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (b"\xff\xfe[]", "malformed_json"),
        (b"42", "wrong_shape"),
        (b'"a string"', "wrong_shape"),
        (b"null", "wrong_shape"),
    ],
)
def test_malformed_or_wrong_shape_is_400(api: Api, world: World, body: bytes, code: str) -> None:
    r = api.post_readings(world, None, body=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == code


def test_fhir_content_type_with_an_array_is_400(api: Api, world: World) -> None:
    r = api.post_readings(world, [], content_type="application/fhir+json")
    assert r.status_code == 400
    assert r.json()["error"] == "wrong_shape"


def test_other_media_type_is_415(api: Api, world: World) -> None:
    r = api.post_readings(world, [data_point(world.user_ref)], content_type="text/plain")
    assert r.status_code == 415


def test_more_than_5000_items_is_413_and_stores_nothing(
    api: Api, world: World, conn: psycopg.Connection
) -> None:
    point = data_point(world.user_ref)
    r = api.post_readings(world, [point] * 5001)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_many_items"
    assert _readings(conn, world) == 0
    fhir = {"resourceType": "Bundle", "type": "collection", "entry": [{}] * 5001}
    r = api.post_readings(world, fhir, content_type="application/fhir+json")
    assert r.status_code == 413


def test_exactly_5000_items_is_accepted(api: Api, world: World, conn: psycopg.Connection) -> None:
    points = [data_point(world.user_ref, value=60 + i % 40) for i in range(5000)]
    r = api.post_readings(world, points)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 5000
    assert _readings(conn, world) == 5000


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_5_mib_is_413_while_streaming(
    api: Api, world: World, conn: psycopg.Connection, chunked: bool
) -> None:
    point = orjson.dumps(data_point(world.user_ref))
    raw = b"[" + point + b"," + b" " * (5 * 1024 * 1024) + point + b"]"
    headers = {"Content-Type": "application/json", "Vitals-Signature": sign(world.secret, raw)}
    url = f"/v1/providers/{world.provider_id}/readings"
    if chunked:  # no Content-Length: the limit must hold while reading the stream

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(raw), 64 * 1024):
                yield raw[i : i + 64 * 1024]

        r = api.client.post(url, content=chunks(), headers=headers)
    else:
        r = api.client.post(url, content=raw, headers=headers)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_large"
    assert _readings(conn, world) == 0


# Reason codes -------------------------------------------------------------------------


def test_every_reason_code_in_input_order_without_values_kept(
    api: Api, conn: psycopg.Connection, master_key: bytes
) -> None:
    world = make_world(
        conn,
        master_key,
        types=("heart-rate", "body-weight", "blood-glucose"),
        consent_types=["heart-rate", "blood-glucose"],
    )
    broken = data_point(world.user_ref)
    del broken["header"]["schema_id"]
    unsupported = data_point(world.user_ref)
    unsupported["header"]["schema_id"]["name"] = "sleep-duration"
    future = data_point(world.user_ref, when=datetime.now(UTC) + timedelta(days=1))
    points = [
        broken,  # invalid_schema
        unsupported,  # unsupported_type
        data_point(world.user_ref, value=900),  # implausible_value
        data_point("nobody-we-know"),  # unknown_subject
        data_point(world.user_ref, "body-weight", value=70),  # no_consent (types)
        data_point(world.user_ref, "step-count", value=50),  # type_not_approved
        future,  # future_timestamp
        data_point(world.user_ref, "heart-rate", value=66),  # accepted
    ]
    r = api.post_readings(world, points)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["reason"] for x in body["results"]] == [
        "invalid_schema",
        "unsupported_type",
        "implausible_value",
        "unknown_subject",
        "no_consent",
        "type_not_approved",
        "future_timestamp",
        None,
    ]
    assert (body["accepted"], body["rejected"]) == (1, 7)
    assert all(x["detail"] for x in body["results"][:7])
    assert [x["id"] for x in body["results"][1:]] == [p["header"]["id"] for p in points[1:]]
    # Refusals are recorded with reason and transport only; no value reached readings.
    reasons = conn.execute(
        "SELECT reason FROM rejections WHERE provider_id = %s AND transport = 'http'",
        (world.provider_id,),
    ).fetchall()
    assert sorted(r[0] for r in reasons) == sorted(x["reason"] for x in body["results"][:7])
    assert _readings(conn, world) == 1


# Concurrency: many small requests share transactions --------------------------------


def _batches() -> float:
    value = REGISTRY.get_sample_value("vitals_batch_readings_count", {"transport": "http"})
    return value or 0.0


def test_concurrent_single_reading_requests_share_transactions(
    api: Api, world: World, conn: psycopg.Connection
) -> None:
    n = 60
    points = [data_point(world.user_ref, value=50 + i) for i in range(n)]
    before = _batches()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda p: api.post_readings(world, p), points))
    assert [s.status_code for s in statuses] == [200] * n
    assert all(s.json()["accepted"] == 1 for s in statuses)
    assert _readings(conn, world) == n
    batches = _batches() - before
    assert 1 <= batches < n, f"{n} requests took {batches} transactions"


# Operations endpoints ----------------------------------------------------------------


def test_health_ready_metrics_and_docs(api: Api, world: World) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    api.post_readings(world, [data_point(world.user_ref)])
    text = api.client.get("/metrics").text
    assert 'vitals_readings_total{reason="",status="accepted",transport="http"}' in text
    assert "vitals_commit_seconds_bucket" in text
    assert 'route="/v1/providers/{provider_id}/readings"' in text
    assert "vitals_http_request_seconds_bucket" in text
    assert api.client.get("/docs").status_code == 200
    spec = api.client.get("/openapi.json").json()
    post = spec["paths"]["/v1/providers/{provider_id}/readings"]["post"]
    content = post["requestBody"]["content"]
    assert "examples" in content["application/json"]
    assert "examples" in content["application/fhir+json"]
    assert {"200", "400", "401", "404", "413", "503"} <= set(post["responses"])


def test_readyz_is_503_while_migrations_are_pending(empty_db: str) -> None:
    with running_app(empty_db) as a:
        r = a.client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "migrations_pending"
        assert "0001_core.sql" in r.json()["pending"]


def test_logs_are_json_without_values_or_personal_identifiers(api: Api, world: World) -> None:
    buffer = io.StringIO()
    # configure() rewires every logger of the process: put them all back after.
    everyone = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in everyone]
    logs.configure(stream=buffer)
    try:
        point = data_point(world.user_ref, value=187)
        assert api.post_readings(world, [point]).status_code == 200
        api.client.get(f"/v1/subjects/{world.subject_id}")  # 401, but a logged path
        deadline = time.monotonic() + 5  # the line is written just after the response
        while "/v1/subjects/{subject_id}" not in buffer.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        for lg, handlers, level, propagate in saved:
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
        logging.getLogger("uvicorn.access").disabled = False
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    events = {line.get("event") for line in lines}
    assert {"readings", "request"} <= events
    text = buffer.getvalue()
    for secret in (world.user_ref, world.subject_id, point["header"]["id"], "187"):
        assert secret not in text
    assert any(line.get("route") == "/v1/subjects/{subject_id}" for line in lines)
