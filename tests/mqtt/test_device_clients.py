"""Devices' own clients: Mosquitto's command-line tools (not paho) against the
broker `vitals broker init` configures and a running `vitals mqtt`.

mosquitto_pub / mosquitto_sub come from the Debian `mosquitto-clients`
package; a machine without them skips these tests and says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import psycopg
import pytest

from ingest.broker.accounts import create_provider_client
from tests.support import seed
from tests.support.ingester import IngesterProcess, points, stored, wait_stored
from tests.support.mqtt import Broker

PUB = shutil.which("mosquitto_pub")
SUB = shutil.which("mosquitto_sub")
RR = shutil.which("mosquitto_rr")
pytestmark = pytest.mark.skipif(
    None in (PUB, SUB, RR), reason="mosquitto_pub/_sub/_rr (mosquitto-clients) missing"
)


class Device:
    """A provider's account as a device would use it from the command line."""

    def __init__(self, broker: Broker, provider_id: str) -> None:
        creds = create_provider_client(broker.admin_url, provider_id)
        self.broker = broker
        self.id = provider_id
        self.username = creds["username"]
        self.password = creds["password"]
        self.client_id = creds["client_id"]
        self.topic = creds["topic"]
        self.rejections = f"vitals/v1/{provider_id}/rejections"

    def args(self, client_id: str | None = None) -> list[str]:
        return [
            "-h",
            self.broker.host,
            "-p",
            str(self.broker.port),
            "-u",
            self.username,
            "-P",
            self.password,
            "-i",
            client_id or self.client_id,
            "-V",
            "mqttv5",
        ]

    def publish(self, payload: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
        assert PUB is not None
        return subprocess.run(
            [PUB, *self.args(), "-q", "1", "-t", self.topic, "-s", *extra],
            input=payload,
            capture_output=True,
            timeout=20,
        )

    def request(self, payload: bytes, timeout_s: int = 25) -> subprocess.CompletedProcess[bytes]:
        """mosquitto_rr: one client publishes the payload (QoS 1) and waits on the
        rejections topic for the answer, as a device with one connection does."""
        assert RR is not None
        return subprocess.run(
            [
                RR,
                *self.args(),
                "-q",
                "1",
                "-t",
                self.topic,
                "-e",
                self.rejections,
                "-W",
                str(timeout_s),
                "-m",
                payload.decode(),
            ],
            capture_output=True,
            timeout=timeout_s + 10,
        )


def _device(conn: psycopg.Connection, master_key: bytes, broker: Broker, consent: bool) -> Device:
    pid = seed.provider(conn, master_key, ("heart-rate",))["provider_id"]
    sid = seed.subject(conn, pid, "alice")
    if consent:
        seed.consent(conn, sid, provider_id=pid, types=["heart-rate"])
    return Device(broker, pid)


def test_mosquitto_pub_readings_are_stored(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingester: IngesterProcess,
    db_url: str,
) -> None:
    device = _device(conn, master_key, broker, consent=True)
    data = points(3)
    done = device.publish(json.dumps(data).encode())
    assert done.returncode == 0, done.stderr.decode()
    wait_stored(db_url, 3, timeout=20)
    with psycopg.connect(db_url, autocommit=True) as c:
        ids = {r[0] for r in c.execute("SELECT reading_id FROM readings").fetchall()}
    assert ids == {p["header"]["id"] for p in data}


def test_a_device_client_is_answered_with_its_refusals(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingester: IngesterProcess,
    db_url: str,
) -> None:
    device = _device(conn, master_key, broker, consent=False)
    [point] = points(1)
    answered = device.request(json.dumps(point).encode())
    assert answered.returncode == 0, answered.stderr.decode()
    refusal = json.loads(answered.stdout)
    assert refusal == {
        "id": point["header"]["id"],
        "reason": "no_consent",
        "detail": refusal["detail"],
    }
    broken = device.request(b'{"header": {"id": "x"')
    assert json.loads(broken.stdout)["reason"] == "invalid_schema"
    assert stored(db_url) == (0, 0)


def test_mosquitto_pub_elsewhere_and_retained_are_refused(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    ingester: IngesterProcess,
    db_url: str,
) -> None:
    device = _device(conn, master_key, broker, consent=True)
    other = _device(conn, master_key, broker, consent=True)
    # Another provider's topic: the broker's ACL denies it (MQTT v5 reason code).
    assert PUB is not None
    elsewhere = subprocess.run(
        [PUB, *device.args(), "-q", "1", "-t", other.topic, "-s"],
        input=json.dumps(points(1)).encode(),
        capture_output=True,
        timeout=20,
    )
    assert elsewhere.returncode != 0 or elsewhere.stderr
    with psycopg.connect(db_url, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM readings").fetchone() == (0,)
    # With the retain flag: the broker keeps nothing for a later subscriber
    # (retain_available false; libmosquitto then sends it unretained).
    device.publish(json.dumps(points(1)).encode(), "-r")
    assert SUB is not None
    late = subprocess.run(
        [
            SUB,
            "-L",
            f"{broker.ingester_url}/{device.topic}",
            "-V",
            "mqttv5",
            "-q",
            "1",
            "--retained-only",
            "-W",
            "3",
            "-i",
            "late-subscriber",
        ],
        capture_output=True,
        timeout=15,
    )
    assert late.stdout == b""
