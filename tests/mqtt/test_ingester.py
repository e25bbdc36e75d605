"""`vitals mqtt` on a private Mosquitto and real PostgreSQL: what providers and operators see.

The ingester runs as a real `vitals mqtt` subprocess (tests/support/ingester.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.support.ingester import (
    IngesterProcess,
    Publisher,
    messages,
    new_provider,
    points,
    stored,
    wait_stored,
)
from tests.support.mqtt import Broker, Collector, connect_reason, publish_qos1
from tests.support.net import wait_for


def test_readings_are_stored_under_the_topics_provider(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingester: IngesterProcess,
    db_url: str,
) -> None:
    a = new_provider(conn, master_key, broker)
    data = points(5)
    acks = publish_qos1(a.url, a.topic, [*messages(data[:4], 2), *messages(data[4:], 1)])
    assert not any(rc.is_failure for rc in acks)
    wait_stored(db_url, 5, timeout=15)
    with psycopg.connect(db_url, autocommit=True) as c:
        rows = c.execute("SELECT DISTINCT provider_id::text, type FROM readings").fetchall()
    assert rows == [(a.id, "heart-rate")]
    wait_for(
        lambda: ingester.metric("vitals_mqtt_messages_total", result="acked") == 3,
        5,
        "3 acknowledged messages",
    )
    assert ingester.metric("vitals_readings_total", transport="mqtt", status="accepted", reason="")
    assert ingester.metric("vitals_mqtt_inflight_messages") == 0


def test_a_reading_without_consent_yields_a_rejection_message(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingester: IngesterProcess,
    db_url: str,
) -> None:
    a = new_provider(conn, master_key, broker, user_ref="bob", consent=False)
    [point] = points(1, "bob")
    rid = point["header"]["id"]
    with Collector(a.url, a.rejections) as inbox:
        inbox.publish(a.topic, messages([point], 1))
        [msg] = inbox.wait_for(1, timeout=15)
    refusal = json.loads(msg.payload)
    assert set(refusal) == {"id", "reason", "detail"}
    assert (refusal["id"], refusal["reason"]) == (rid, "no_consent")
    assert stored(db_url) == (0, 0)
    with psycopg.connect(db_url, autocommit=True) as c:
        rows = c.execute(
            "SELECT provider_id::text, reading_id, reason, transport FROM rejections"
        ).fetchall()
    assert rows == [(a.id, rid, "no_consent", "mqtt")]


def test_provider_b_cannot_publish_to_provider_as_topic(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingester: IngesterProcess,
    db_url: str,
) -> None:
    a = new_provider(conn, master_key, broker, user_ref="alice")
    b = new_provider(conn, master_key, broker, user_ref="bert")
    [forged] = publish_qos1(b.url, a.topic, messages(points(1, "alice"), 1))
    assert forged.is_failure
    [own] = publish_qos1(b.url, b.topic, messages(points(1, "bert", prefix="b"), 1))
    assert not own.is_failure
    wait_stored(db_url, 1, timeout=15)  # B's own reading: the ingester was listening
    time.sleep(0.5)
    with psycopg.connect(db_url, autocommit=True) as c:
        providers = c.execute("SELECT provider_id::text, reading_id FROM readings").fetchall()
        refused = c.execute("SELECT count(*) FROM rejections").fetchone()
    assert providers == [(b.id, "b-0")]
    assert refused == (0,)


def test_anonymous_and_wrong_passwords_are_refused(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingester: IngesterProcess,
    db_url: str,
) -> None:
    a = new_provider(conn, master_key, broker)
    username = f"provider-{a.id}"
    assert connect_reason(f"mqtt://127.0.0.1:{broker.port}").is_failure
    assert connect_reason(broker.url(username, a.password + "x")).is_failure
    assert connect_reason(broker.url("vitals-ingester", "guess")).is_failure
    for url in (f"mqtt://127.0.0.1:{broker.port}", broker.url(username, "wrong")):
        with pytest.raises(ConnectionRefusedError):
            publish_qos1(url, a.topic, messages(points(1), 1))
    assert not connect_reason(a.url).is_failure  # the right password works
    time.sleep(0.5)
    assert stored(db_url) == (0, 0)


def test_malformed_payloads_are_refused_and_ingestion_goes_on(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingester: IngesterProcess,
    db_url: str,
) -> None:
    a = new_provider(conn, master_key, broker)
    no_body = points(1, prefix="nobody")[0]
    del no_body["body"]
    good = points(1, prefix="good")
    bad = [
        b"this is not json",
        b"42",
        b'{"header": {"id": "cut',
        json.dumps(no_body).encode(),
        b"\xff\xfe",
    ]
    # (A message over 256 KiB never reaches the ingester: the broker refuses it,
    # test_broker.py::test_messages_larger_than_256_kib_are_refused_by_the_broker.)
    with Collector(a.url, a.rejections) as inbox:
        acks = inbox.publish(a.topic, [*bad, *messages(good, 1)])
        assert not any(rc.is_failure for rc in acks)
        received = inbox.wait_for(len(bad), timeout=15)
        received = inbox.quiet(0.3)
    refusals = [json.loads(m.payload) for m in received]
    assert [r["reason"] for r in refusals] == ["invalid_schema"] * len(bad)
    assert {r["id"] for r in refusals} == {None, "nobody-0"}
    wait_stored(db_url, 1, timeout=10)
    assert ingester.alive()
    with psycopg.connect(db_url, autocommit=True) as c:
        reasons = c.execute("SELECT reason, count(*) FROM rejections GROUP BY reason").fetchall()
    assert reasons == [("invalid_schema", len(bad))]
    assert ingester.metric("vitals_mqtt_messages_total", result="malformed") == len(bad) - 1
    # Still ingesting after all that.
    publish_qos1(a.url, a.topic, messages(points(1, prefix="later"), 1))
    wait_stored(db_url, 2, timeout=10)


def test_sigterm_drains_commits_acknowledges_and_exits_0(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingesters: Callable[..., IngesterProcess],
    db_url: str,
) -> None:
    a = new_provider(conn, master_key, broker)
    # A small receive window, so that the broker still holds messages at SIGTERM.
    ingester = ingesters(args=["--receive-maximum", "10"]).start()
    # Enough that the broker still holds messages at SIGTERM even on a loaded
    # machine (10,000 were sometimes all committed before the signal landed).
    data = points(30_000)
    payloads = messages(data, 10)
    publisher = Publisher(a.url, a.topic, payloads)
    publisher.start()
    wait_stored(db_url, 500, timeout=30)
    assert ingester.terminate() == 0, ingester.log()[-4000:]
    publisher.finish()
    assert "drained" in ingester.log()

    # Everything committed was acknowledged: the session redelivers only the rest.
    with psycopg.connect(db_url, autocommit=True) as c:
        committed = {r[0] for r in c.execute("SELECT reading_id FROM readings")}
    assert 500 <= len(committed) < len(data)
    with Collector(
        broker.ingester_url, client_id=ingester.client_id, clean_start=False, session_expiry=600
    ) as session:
        assert session.session_present
        left = len(payloads) - len(committed) // 10
        redelivered = session.wait_for(left, timeout=30)
        redelivered = session.quiet(0.5)
    again = {p["header"]["id"] for m in redelivered for p in json.loads(m.payload)}
    assert not committed & again
    assert committed | again == {p["header"]["id"] for p in data}


def test_a_restarted_ingester_resumes_its_session(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingesters: Callable[..., IngesterProcess],
    db_url: str,
) -> None:
    a = new_provider(conn, master_key, broker)
    proc = ingesters().start()
    assert proc.terminate() == 0
    publish_qos1(a.url, a.topic, messages(points(50), 5))  # while no ingester runs
    proc.start()
    wait_stored(db_url, 50, timeout=15)


@pytest.mark.slow
def test_two_ingesters_share_the_subscription_and_store_each_reading_once(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingesters: Callable[..., IngesterProcess],
    db_url: str,
) -> None:
    a = new_provider(conn, master_key, broker)
    first, second = ingesters(instance="a").start(), ingesters(instance="b").start()
    data = points(10_000)
    acks = publish_qos1(a.url, a.topic, messages(data, 5), timeout=60)
    assert not any(rc.is_failure for rc in acks)
    wait_stored(db_url, 10_000, timeout=60)
    time.sleep(0.5)
    assert stored(db_url) == (10_000, 10_000)
    shares = [p.metric("vitals_mqtt_messages_total", result="acked") for p in (first, second)]
    assert sum(shares) == 2000 and min(shares) > 0, shares
    assert first.terminate() == 0 and second.terminate() == 0


def test_a_vanished_instance_stops_taking_a_share_after_its_session_expiry(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingesters: Callable[..., IngesterProcess],
    db_url: str,
) -> None:
    """An instance that never comes back (a recreated container under a new id)
    keeps its shared-subscription session only for the session expiry; after
    it, every reading reaches the instances that remain."""
    a = new_provider(conn, master_key, broker)
    expiry = ["--session-expiry", "2"]
    gone = ingesters(instance="gone", args=expiry).start()
    stays = ingesters(instance="stays", args=expiry).start()
    gone.kill()  # no DISCONNECT: the broker keeps the session for its expiry
    time.sleep(4.0)
    data = points(200)
    acks = publish_qos1(a.url, a.topic, messages(data, 2))
    assert not any(rc.is_failure for rc in acks)
    wait_stored(db_url, len(data), timeout=20)
    assert stays.metric("vitals_mqtt_messages_total", result="acked") == len(data) // 2
    assert stays.terminate() == 0


def test_instance_auto_reuses_the_number_a_stopped_replica_left(
    cli_env: dict[str, str], broker: Broker, tmp_path: Path
) -> None:
    """`--instance auto`: replicas sharing an instance directory take 0, 1, ...;
    a replacement takes the freed number, so it resumes that session."""
    env = {**cli_env, "VITALS_MQTT_INSTANCE_DIR": str(tmp_path / "instances")}
    made = [
        IngesterProcess(env, broker, tmp_path, instance=f"r{i}", args=["--instance", "auto"])
        for i in range(3)
    ]

    def claimed(proc: IngesterProcess) -> str:
        for line in proc.log().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "instance":
                return str(json.loads(line)["instance"])
        raise AssertionError(f"no instance in the log:\n{proc.log()[-2000:]}")

    try:
        first, second, third = made
        first.start()
        second.start()
        assert (claimed(first), claimed(second)) == ("0", "1")
        first.kill()  # however it ends, its number is free again
        third.start()
        assert claimed(third) == "0"
    finally:
        for proc in made:
            proc.kill()
