"""MQTT ingestion, published → committed, beside a raw COPY and a naive ingester.

    python -m bench.mqtt [--readings 500000] [--per-message 100] [--naive-readings 10000]
                         [--instances 2]

One private Mosquitto (from `vitals broker init`) and one scratch database:
1. raw COPY of the same rows into `readings` (the ceiling);
2. `vitals mqtt` (two subprocesses on the shared subscription, as compose runs
   them): every reading published as QoS 1 arrays, timed
   from the first publish until the last reading is committed;
3. the same ingester at half that rate: publish → commit latency per message,
   observed through a LISTEN on a notification its commits raise;
4. a naive ingester on the same broker: a paho callback doing one INSERT +
   commit per reading (on fewer readings; it is slow).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    SECRET_KEY,
    ceiling_rows,
    data_points,
    raw_copy,
    scratch_database,
    seed_registry,
)
from bench.cpu import Meter, backends, bound
from ingest.broker.accounts import create_provider_client
from ingest.broker.config import ingester_client_id, parse_mqtt_url
from ingest.gate.payload import parse_payload
from schemas.reading import Reading
from tests.support.mqtt import Broker, make_client, start_broker
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = (
    "effective_time, subject_id, provider_id, reading_id, type, component, value, unit, "
    "orig_value, orig_unit"
)

# The latency probe: a commit that inserted readings of messages m1, m2 notifies
# "m1,m2" (a statement trigger: one notification per batch, cheap for the writer).
NOTIFY_TRIGGER = """
CREATE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_committed',
                      (SELECT string_agg(DISTINCT split_part(reading_id, '-', 1), ',')
                       FROM new_rows));
    RETURN NULL;
END $$;
CREATE TRIGGER bench_notify AFTER INSERT ON readings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench_notify();
"""

# The naive ingester's statement: subject lookup and consent check per reading.
NAIVE_INSERT = """
INSERT INTO readings (effective_time, subject_id, provider_id, reading_id, type, component,
                      value, unit, orig_value, orig_unit)
SELECT %(t)s, l.subject_id, l.provider_id, %(id)s, %(type)s, %(component)s,
       %(value)s, %(unit)s, %(orig_value)s, %(orig_unit)s
FROM links l
WHERE l.provider_id = %(provider_id)s AND l.user_ref = %(user_ref)s
  AND EXISTS (SELECT 1 FROM consents c
              WHERE c.subject_id = l.subject_id AND c.purpose = 'collection'
                AND (c.provider_id IS NULL OR c.provider_id = l.provider_id)
                AND %(t)s >= c.valid_from AND %(t)s < c.valid_until
                AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w
                                WHERE w.consent_id = c.consent_id))
ON CONFLICT ON CONSTRAINT readings_dedup DO NOTHING
"""


def batches(points: list[dict[str, Any]], per: int, tag: str) -> list[bytes]:
    """Arrays of `per` data points; reading ids `{tag}{message}-{n}` name their message."""
    out = []
    for m, start in enumerate(range(0, len(points), per)):
        chunk = points[start : start + per]
        for n, p in enumerate(chunk):
            p["header"]["id"] = f"{tag}{m}-{n}"
        out.append(orjson.dumps(chunk))
    return out


def publisher(url: str) -> mqtt.Client:
    client, kwargs = make_client(url)
    client.max_inflight_messages_set(1000)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect(**kwargs)
    client.loop_start()
    if not connected.wait(5):
        raise RuntimeError("publisher could not connect")
    return client


def wait_for(check: Callable[[], bool], timeout: float, what: str, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(step)


class Ingester:
    """`vitals mqtt` as a subprocess; its accepted count read from its metrics."""

    def __init__(
        self,
        db_url: str,
        broker: Broker,
        log_dir: Path,
        profile: str | None = None,
        profile_gil: bool = False,
        instance: str = "bench",
    ) -> None:
        self.port = free_port()
        self.instance = instance
        self.transactions = 0  # batches committed during max_rate
        self.mqtt_url = broker.ingester_url
        env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
        env |= {
            "VITALS_DATABASE_URL": db_url,
            "VITALS_MQTT_URL": broker.ingester_url,
            "VITALS_SECRET_KEY": SECRET_KEY,
        }
        self.log = log_dir / f"ingester-{instance}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", "mqtt", "--instance", instance]
                + ["--metrics-port", str(self.port)],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self.sample("vitals_mqtt_connected") == 1, 30, "the ingester", 0.1)
        self.profiler = None
        if profile:  # py-spy, attached until the ingester exits
            self.profiler = subprocess.Popen(
                ["py-spy", "record", "--pid", str(self.process.pid), "--threads"]
                + ["--format", "raw", "--rate", "200", "-o", profile]
                + (["--gil"] if profile_gil else []),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)

    def sample(self, name: str, **labels: str) -> float:
        if self.process.poll() is not None:
            raise RuntimeError(f"ingester exited; see {self.log}")
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (local)
                text = r.read().decode()
        except OSError:
            return -1.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    def accepted(self) -> float:
        return self.sample("vitals_readings_total", transport="mqtt", status="accepted")

    def stop(self) -> None:
        self.process.terminate()
        if self.process.wait(60) != 0:
            raise RuntimeError(f"ingester exited {self.process.returncode}; see {self.log}")
        if self.profiler is not None:
            self.profiler.wait(30)
        # End its persistent session: it would keep a share of later messages.
        client, kwargs = make_client(
            self.mqtt_url, ingester_client_id(self.mqtt_url, self.instance)
        )
        client.connect(**kwargs)
        client.loop_start()
        time.sleep(0.2)
        client.disconnect()
        client.loop_stop()


class Ingesters:
    """One or more `vitals mqtt` instances on the shared subscription (they split
    the messages between them), summed."""

    def __init__(self, members: list[Ingester]) -> None:
        self.members = members
        self.transactions = 0

    @property
    def pids(self) -> list[int]:
        return [m.process.pid for m in self.members]

    def sample(self, name: str, **labels: str) -> float:
        return sum(m.sample(name, **labels) for m in self.members)

    def accepted(self) -> float:
        return sum(m.accepted() for m in self.members)

    def stop(self) -> None:
        for m in self.members:
            m.stop()


def max_rate(
    ingester: Ingesters, url: str, topic: str, payloads: list[bytes], n: int, meter: Meter
) -> float:
    """Seconds from the first publish until n readings are committed.

    The ingester's metrics are polled every 0.25 s until 90 % are in, then
    every 10 ms: a scrape costs the ingester CPU (every metric rendered, /proc
    read), and polling 20 times a second throughout made its metrics threads
    ~13 % of its py-spy samples."""
    base = ingester.accepted()
    batches_before = ingester.sample("vitals_batch_readings_count", transport="mqtt")
    client = publisher(url)
    meter.start()
    started = time.perf_counter()
    for payload in payloads:
        client.publish(topic, payload, qos=1)
    wait_for(lambda: ingester.accepted() - base >= 0.9 * n, 600, f"{n} committed readings", 0.25)
    wait_for(lambda: ingester.accepted() - base >= n, 600, f"{n} committed readings", 0.01)
    elapsed = time.perf_counter() - started
    meter.stop()
    ingester.transactions = int(
        ingester.sample("vitals_batch_readings_count", transport="mqtt") - batches_before
    )
    client.disconnect()
    client.loop_stop()
    return elapsed


def latency_at(
    db_url: str, url: str, topic: str, payloads: list[bytes], rate: float
) -> list[float]:
    """Publish at `rate` messages/s; per-message seconds from publish to commit."""
    published: dict[str, float] = {}
    committed: dict[str, float] = {}
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN bench_committed")
        done = threading.Event()

        def listen() -> None:
            for note in listener.notifies(timeout=600):
                now = time.perf_counter()
                for message in note.payload.split(","):
                    committed.setdefault(message, now)
                if len(committed) >= len(payloads):
                    break
            done.set()

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        client = publisher(url)
        interval = 1.0 / rate
        started = time.perf_counter()
        for m, payload in enumerate(payloads):
            due = started + m * interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            published[f"L{m}"] = time.perf_counter()
            client.publish(topic, payload, qos=1)
        if not done.wait(120):
            raise TimeoutError(f"{len(committed)} of {len(payloads)} messages committed")
        client.disconnect()
        client.loop_stop()
    return sorted(committed[m] - t for m, t in published.items())


def naive(
    db_url: str, broker: Broker, url: str, topic: str, payloads: list[bytes], n: int
) -> float:
    """The strawman: parse, then one INSERT + commit per reading, in paho's callback."""
    conn = psycopg.connect(db_url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id="bench-naive",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    _h, _p, username, password = parse_mqtt_url(broker.ingester_url)
    client.username_pw_set(username, password)
    stored = [0]
    subscribed = threading.Event()
    finished = threading.Event()

    def on_connect(c: mqtt.Client, *_a: Any) -> None:
        c.subscribe("vitals/v1/+/readings", qos=1)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        provider_id = msg.topic.split("/")[2]
        for r in parse_payload(orjson.loads(msg.payload), now=datetime.now(UTC)):
            if isinstance(r, Reading):
                for comp in r.components:
                    conn.execute(
                        NAIVE_INSERT,
                        {
                            "t": r.effective_time,
                            "id": r.id,
                            "type": r.type,
                            "component": comp.name,
                            "value": comp.value,
                            "unit": comp.unit,
                            "orig_value": comp.orig_value,
                            "orig_unit": comp.orig_unit,
                            "provider_id": provider_id,
                            "user_ref": r.user_ref,
                        },
                    )
                conn.commit()
                stored[0] += 1
        if stored[0] >= n:
            finished.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    host, port, _u, _pw = parse_mqtt_url(broker.ingester_url)
    client.connect(host, port)
    client.loop_start()
    if not subscribed.wait(5):
        raise RuntimeError("naive ingester could not subscribe")
    pub = publisher(url)
    started = time.perf_counter()
    for payload in payloads:
        pub.publish(topic, payload, qos=1)
    if not finished.wait(600):
        raise TimeoutError(f"naive ingester stored {stored[0]} of {n}")
    elapsed = time.perf_counter() - started
    for c in (pub, client):
        c.disconnect()
        c.loop_stop()
    conn.close()
    return elapsed


def truncate(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("TRUNCATE readings, rejections")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Long enough for steady state: the ingesters' first batches are small (a
    # committer takes what is there) and grow within about half a second, which
    # at 200,000 readings was a fifth of the run (0.44-0.50 against 0.59-0.62).
    ap.add_argument("--readings", type=int, default=500_000)
    ap.add_argument("--per-message", type=int, default=100)
    ap.add_argument("--naive-readings", type=int, default=10_000)
    ap.add_argument("--latency-readings", type=int, default=100_000)
    ap.add_argument("--subjects", type=int, default=1_000)
    ap.add_argument(
        "--instances",
        type=int,
        default=2,  # as docker-compose.yml runs them
        help="vitals mqtt processes on the shared subscription",
    )
    ap.add_argument("--profile", metavar="FILE", help="py-spy the ingester into FILE (raw)")
    ap.add_argument(
        "--profile-gil", action="store_true", help="profile only the thread holding the GIL"
    )
    args = ap.parse_args()
    n, per = args.readings, args.per_message

    with tempfile.TemporaryDirectory() as tmp, scratch_database("vitals_bench_mqtt") as url:
        broker = start_broker(Path(tmp) / "broker")
        try:
            pid, refs, _ = seed_registry(url, args.subjects)
            creds = create_provider_client(broker.admin_url, pid)
            device = broker.url(creds["username"], creds["password"])
            topic = creds["topic"]

            # 1. The ceiling: the same rows straight into the table.
            points = data_points(n, refs)
            rows = ceiling_rows(url, pid, points)
            copy_cpu: dict[str, float] = {}
            copy_s = raw_copy(url, rows, copy_cpu)

            # 2. The ingester at full speed.
            ingester = Ingesters(
                [
                    Ingester(
                        url,
                        broker,
                        Path(tmp),
                        args.profile if i == 0 else None,
                        args.profile_gil,
                        instance=f"bench-{i}",
                    )
                    for i in range(args.instances)
                ]
            )
            assert broker.process is not None
            meter = Meter(
                ingester=ingester.pids,
                postgres=lambda: backends(url),
                mosquitto=[broker.process.pid],
            )
            mqtt_s = max_rate(ingester, device, topic, batches(points, per, "M"), n, meter)
            transactions = ingester.transactions
            rate = n / mqtt_s

            # 3. Latency at half that rate.
            with psycopg.connect(url) as conn:
                conn.execute(NOTIFY_TRIGGER)
            lat_points = data_points(args.latency_readings, refs)
            lat_payloads = batches(lat_points, per, "L")
            latencies = latency_at(url, device, topic, lat_payloads, rate / 2 / per)
            ingester.stop()
            with psycopg.connect(url) as conn:
                conn.execute("DROP TRIGGER bench_notify ON readings")
            truncate(url)

            # 4. The naive ingester, same broker, same payloads (fewer of them).
            naive_points = data_points(args.naive_readings, refs)
            naive_s = naive(
                url,
                broker,
                device,
                topic,
                batches(naive_points, per, "N"),
                args.naive_readings,
            )
        finally:
            broker.stop()

    copy_rate, naive_rate = n / copy_s, args.naive_readings / naive_s
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(f"{'stage':<44}{'readings':>10}{'seconds':>10}{'readings/s':>14}")
    print(f"{'raw COPY of the same rows (ceiling)':<44}{n:>10}{copy_s:>10.2f}{copy_rate:>14,.0f}")
    label = f"vitals mqtt, {per}/message, published→committed"
    if args.instances > 1:
        label = f"vitals mqtt ×{args.instances}, {per}/message, published→committed"
    print(f"{label:<44}{n:>10}{mqtt_s:>10.2f}{rate:>14,.0f}")
    naive_label = "naive: paho callback, INSERT+commit/reading"
    print(f"{naive_label:<44}{args.naive_readings:>10}{naive_s:>10.2f}{naive_rate:>14,.0f}")
    print(f"ratio vitals mqtt / raw COPY: {rate / copy_rate:.2f} (target >= 0.5)")
    print(
        f"vitals mqtt committed them in {transactions} transactions "
        f"({n / max(transactions, 1):,.0f} readings each on average)"
    )
    print(f"ratio vitals mqtt / naive:    {rate / naive_rate:.1f}x")
    print(
        f"publish→commit latency at half the maximum rate ({rate / 2:,.0f} readings/s, "
        f"{len(latencies)} messages): p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    ceiling_cpu = ", ".join(f"{k} {1e6 * v / n:.1f}" for k, v in copy_cpu.items())
    print(f"CPU per reading, raw COPY: {ceiling_cpu} µs")
    print(f"CPU per reading, vitals mqtt: {meter.per_reading(n)}")
    print(bound(copy_s, sum(meter.used.values())))


if __name__ == "__main__":
    main()
