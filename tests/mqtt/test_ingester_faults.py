"""`vitals mqtt` under faults: SIGKILL, broker restart, database outage. Nothing lost or doubled."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from psycopg import sql

from ingest.broker.config import parse_mqtt_url
from tests.support.ingester import (
    IngesterProcess,
    Publisher,
    messages,
    new_provider,
    points,
    stored,
    wait_stored,
)
from tests.support.mqtt import Broker

pytestmark = pytest.mark.slow

N = 20_000


NO_MATCHING_SUBSCRIBERS = 0x10


class ResilientPublisher(threading.Thread):
    """A device that rides out broker restarts: a persistent session, paho's
    automatic reconnect and resend of unacknowledged QoS 1 messages, and a
    resend of any message the broker answered with 0x10 "No matching subscribers".

    Mosquitto 2.0.11 does not restore shared subscriptions from its persistence
    store: until the ingester has reconnected and subscribed again, the broker
    acknowledges readings with 0x10 and keeps them for nobody. A device must
    treat 0x10 as "not delivered, send again".
    """

    def __init__(self, url: str, topic: str, payloads: list[bytes], pace: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.url, self.topic, self.payloads, self.pace = url, topic, payloads, pace
        self.error: BaseException | None = None
        self.resent = 0
        self._results: list[tuple[int, ReasonCode]] = []
        self._cond = threading.Condition()

    def run(self) -> None:
        try:
            self._publish()
        except BaseException as e:
            self.error = e

    def _publish(self) -> None:
        host, port, username, password = parse_mqtt_url(self.url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=username or "",  # provider accounts are bound to this client id
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.username_pw_set(username, password)
        client.reconnect_delay_set(1, 2)
        client.max_inflight_messages_set(100)
        connected = threading.Event()

        def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
            if not rc.is_failure:
                connected.set()

        def on_publish(_c: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
            with self._cond:
                self._results.append((mid, rc))
                self._cond.notify_all()

        client.on_connect = on_connect
        client.on_publish = on_publish
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        client.connect_async(host, port, clean_start=False, properties=props)
        client.loop_start()
        try:
            if not connected.wait(10):
                raise TimeoutError("device could not connect")
            pending: dict[int, bytes] = {}  # mid → payload not yet delivered
            for payload in self.payloads:
                pending[client.publish(self.topic, payload, qos=1).mid] = payload
                if self.pace:
                    time.sleep(self.pace)
            deadline = time.monotonic() + 120
            while pending:
                with self._cond:
                    if not self._results and not self._cond.wait(deadline - time.monotonic()):
                        raise TimeoutError(f"{len(pending)} publishes without PUBACK")
                    results, self._results = self._results, []
                for mid, rc in results:
                    payload = pending.pop(mid)
                    if rc.value == NO_MATCHING_SUBSCRIBERS:
                        self.resent += 1
                        time.sleep(0.05)
                        pending[client.publish(self.topic, payload, qos=1).mid] = payload
                    elif rc.is_failure:
                        raise AssertionError(f"broker refused a publish: {rc}")
        finally:
            client.disconnect()
            client.loop_stop()

    def finish(self, timeout: float = 150) -> None:
        self.join(timeout)
        assert not self.is_alive(), "device still publishing"
        if self.error is not None:
            raise self.error


def assert_exactly(db_url: str, n: int) -> None:
    time.sleep(1.0)  # anything still arriving would be a duplicate or a surplus
    rows, distinct = stored(db_url)
    assert (rows, distinct) == (n, n), f"{rows} rows, {distinct} distinct reading ids"


def test_sigkill_mid_stream_and_restart_stores_exactly_20000(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingesters: Callable[..., IngesterProcess],
    db_url: str,
) -> None:
    a = new_provider(conn, master_key, broker)
    ingester = ingesters().start()
    publisher = Publisher(a.url, a.topic, messages(points(N), 10))
    publisher.start()
    wait_stored(db_url, 3_000, timeout=60)
    ingester.kill()  # SIGKILL: no drain, whatever it held is unacknowledged
    killed_at = stored(db_url)[0]
    assert killed_at < N, "the stream was over before the kill"
    ingester.start()  # same instance: resumes its persistent session
    publisher.finish()
    wait_stored(db_url, N, timeout=90)
    assert_exactly(db_url, N)
    assert ingester.terminate() == 0


def test_mosquitto_restart_mid_stream_loses_nothing(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingesters: Callable[..., IngesterProcess],
    db_url: str,
) -> None:
    a = new_provider(conn, master_key, broker)
    ingester = ingesters().start()
    pid = ingester.process.pid if ingester.process else None
    device = ResilientPublisher(a.url, a.topic, messages(points(N), 10), pace=0.001)
    device.start()
    wait_stored(db_url, 3_000, timeout=60)
    broker.restart()  # SIGTERM: Mosquitto saves its store, then starts from it
    assert stored(db_url)[0] < N, "the stream was over before the restart"
    device.finish()
    wait_stored(db_url, N, timeout=90)
    assert_exactly(db_url, N)
    assert ingester.alive() and ingester.process is not None and ingester.process.pid == pid
    assert ingester.terminate() == 0


def test_database_outage_mid_stream_loses_nothing_without_restart_and_bounds_memory(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingesters: Callable[..., IngesterProcess],
    db_url: str,
    pg_server_url: str,
) -> None:
    window = 50
    a = new_provider(conn, master_key, broker)
    ingester = ingesters(args=["--receive-maximum", str(window)]).start()
    assert ingester.process is not None
    pid = ingester.process.pid
    before = points(2_000)
    Publisher(a.url, a.topic, messages(before, 10)).run()
    wait_stored(db_url, len(before), timeout=30)
    rss_before = ingester.rss_mb()

    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    assert isinstance(dbname, str)
    ident = sql.Identifier(dbname)
    during = points(N)
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        # This test's database alone refuses connections; the shared server keeps running.
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [dbname],
            )
            outage_started = time.monotonic()
            publisher = Publisher(a.url, a.topic, messages(during, 10))
            publisher.start()
            publisher.finish()  # the broker took every message while the database is down
            inflight, rss = [], []
            while time.monotonic() - outage_started < 10:
                inflight.append(ingester.metric("vitals_mqtt_inflight_messages"))
                rss.append(ingester.rss_mb())
                assert ingester.alive()
                time.sleep(0.25)
            unavailable = ingester.metric(
                "vitals_storage_errors_total", transport="mqtt", kind="unavailable"
            )
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))

    assert unavailable > 0, "the ingester never noticed the outage"
    # Bounded: the broker holds what the ingester has not acknowledged.
    assert max(inflight) <= window, inflight
    growth = max(rss) - rss_before
    # Measured: +0.1 MiB with this window, +9 MiB when the broker may send everything.
    assert growth < 5, f"RSS grew {growth:.1f} MiB during the outage ({rss_before:.0f} MiB before)"

    wait_stored(db_url, len(before) + N, timeout=90)
    assert_exactly(db_url, len(before) + N)
    assert ingester.alive() and ingester.process.pid == pid  # no restart needed
    assert ingester.terminate() == 0


def test_database_outage_holds_at_most_max_inflight_bytes(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingesters: Callable[..., IngesterProcess],
    db_url: str,
    pg_server_url: str,
) -> None:
    """The receive maximum bounds the count of unacknowledged messages, not their
    size (up to 256 KiB each); --max-inflight-bytes bounds the bytes: the
    ingester stops reading and the broker keeps the rest."""
    limit = 64 * 1024
    a = new_provider(conn, master_key, broker)
    ingester = ingesters(
        args=["--receive-maximum", "1000", "--max-inflight-bytes", str(limit)]
    ).start()
    during = points(6_000)
    payloads = messages(during, 20)  # 300 messages of ~8 KB: ~2.3 MiB in all
    largest = max(len(p) for p in payloads)

    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    assert isinstance(dbname, str)
    ident = sql.Identifier(dbname)
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [dbname],
            )
            Publisher(a.url, a.topic, payloads).run()  # the broker took every message
            held, count, paused = [], [], []
            started = time.monotonic()
            while time.monotonic() - started < 6:
                held.append(ingester.metric("vitals_mqtt_inflight_bytes"))
                count.append(ingester.metric("vitals_mqtt_inflight_messages"))
                paused.append(ingester.metric("vitals_mqtt_reading_paused"))
                assert ingester.alive()
                time.sleep(0.2)
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))

    assert max(held) >= limit, held  # it did fill up ...
    assert max(held) <= limit + largest, held  # ... and went no further than one message
    assert max(count) <= limit // min(len(p) for p in payloads) + 1, count
    assert max(paused) == 1.0
    wait_stored(db_url, len(during), timeout=90)
    assert_exactly(db_url, len(during))
    assert ingester.metric("vitals_mqtt_inflight_bytes") == 0
    assert ingester.terminate() == 0
