"""A private Mosquitto broker and small paho helpers, and their fixtures (a
pytest plugin, registered in tests/conftest.py).

The helpers need no pytest, so benchmarks and the demo can use them too:

    broker = start_broker(tmp_path)          # raises MosquittoUnavailable if not installed
    with Collector(broker.ingester_url, "$share/vitals/vitals/v1/+/readings") as inbox:
        publish_qos1(provider_url, topic, [b"..."])
        inbox.wait_for(1)
    broker.stop()

Fixtures: `broker` (a fresh broker for one test: persistent sessions of an
earlier test cannot take a share of its messages) and `module_broker` (one
broker for the tests of a module that need no fresh one).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest.broker.config import broker_init, parse_mqtt_url
from tests.support.net import free_port


class MosquittoUnavailable(RuntimeError):
    """The mosquitto binary or its dynamic-security plugin is missing."""


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto")
    for candidate in (found, "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise MosquittoUnavailable(
        "these tests need a real Mosquitto 2.x broker, and no `mosquitto` executable "
        "was found on PATH or in /usr/sbin (install the `mosquitto` package)"
    )


def url_for(username: str, password: str, port: int, host: str = "127.0.0.1") -> str:
    return f"mqtt://{quote(username, safe='')}:{quote(password, safe='')}@{host}:{port}"


@dataclass
class Broker:
    """A mosquitto process running the config written by broker_init."""

    directory: Path
    port: int
    config: Path
    admin_url: str
    ingester_url: str
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def url(self, username: str, password: str) -> str:
        return url_for(username, password, self.port, self.host)

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("broker already running")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.process.returncode}; log:\n{self.log()[-4000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"mosquitto did not accept connections on {self.port} within "
                        f"{timeout:g} s; log:\n{self.log()[-4000:]}"
                    ) from None
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the broker saves its persistence store), then wait."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError("mosquitto ignored SIGTERM and was killed") from None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_broker(tmp_dir: Path) -> Broker:
    """broker_init into tmp_dir on a free port, run mosquitto, wait until it listens."""
    mosquitto_binary()
    directory = Path(tmp_dir)
    for _ in range(5):
        port = free_port()
        info = broker_init(directory, port=port, force=True)
        broker = Broker(
            directory=directory,
            port=port,
            config=Path(info["config"]),
            admin_url=info["mqtt_admin_url"],
            ingester_url=info["mqtt_url"],
        )
        try:
            broker.start()
        except RuntimeError:
            if "Address already in use" in broker.log():
                continue  # lost the race for the free port; pick another
            raise
        return broker
    raise RuntimeError("could not find a free port for mosquitto")


# ----------------------------------------------------------------- paho helpers


def make_client(
    url: str,
    client_id: str = "",
    *,
    clean_start: bool = True,
    session_expiry: int = 0,
) -> tuple[mqtt.Client, dict[str, Any]]:
    """An MQTT v5 paho client (VERSION2 callbacks) and its connect arguments.

    A provider account may connect only with its bound client id (its
    username), which is the default here; any other `client_id` is refused.
    """
    host, port, username, password = parse_mqtt_url(url)
    if not client_id and username and username.startswith("provider-"):
        client_id = username
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    if username is not None:
        client.username_pw_set(username, password)
    props = Properties(PacketTypes.CONNECT)
    if session_expiry:
        props.SessionExpiryInterval = session_expiry
    kwargs = {
        "host": host,
        "port": port,
        "keepalive": 30,
        "clean_start": clean_start,
        "properties": props,
    }
    return client, kwargs


def connect_reason(url: str, client_id: str = "", timeout: float = 5.0) -> ReasonCode:
    """CONNACK reason code for a login attempt (success or the broker's refusal)."""
    client, kwargs = make_client(url, client_id)
    result: list[ReasonCode] = []
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        result.append(rc)
        done.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if not result:
            result.append(rc)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect(**kwargs)
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise TimeoutError("no CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


class Collector:
    """Subscribe once connected and collect every message (QoS 1, auto-acked)."""

    def __init__(
        self,
        url: str,
        *topics: str,
        client_id: str = "",
        clean_start: bool = True,
        session_expiry: int = 0,
        qos: int = 1,
    ) -> None:
        self.topics = topics
        self.qos = qos
        self.client, self._connect = make_client(
            url, client_id, clean_start=clean_start, session_expiry=session_expiry
        )
        self.messages: list[mqtt.MQTTMessage] = []
        self.acks: dict[int, ReasonCode] = {}
        self.granted: list[ReasonCode] = []
        self.connack: ReasonCode | None = None
        self.session_present = False
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.disconnected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(self, client: Any, _u: Any, flags: Any, rc: ReasonCode, _p: Any) -> None:
        self.connack = rc
        self.session_present = bool(flags.session_present)
        if rc.is_failure or not self.topics:
            self._subscribed.set()
            return
        client.subscribe([(t, self.qos) for t in self.topics])

    def _on_subscribe(self, _c: Any, _u: Any, _m: int, rcs: list[ReasonCode], _p: Any) -> None:
        self.granted = list(rcs)
        self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        with self._cond:
            self.acks[mid] = rc
            self._cond.notify_all()

    def publish(
        self, topic: str, payloads: Iterable[bytes | str], timeout: float = 30.0
    ) -> list[ReasonCode]:
        """Publish QoS 1 on this same connection (as a provider's one connection
        does: readings out, rejections in); each PUBACK's reason code, in order."""
        mids = [self.client.publish(topic, payload, qos=1).mid for payload in payloads]
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(mid in self.acks for mid in mids):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.acks)} of {len(mids)} PUBACKs")
                self._cond.wait(left)
            return [self.acks[mid] for mid in mids]

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if self.connack is None:
            self.connack = rc
        self.disconnected.set()
        self._subscribed.set()

    def start(self, timeout: float = 5.0) -> Collector:
        self.client.connect(**self._connect)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"no CONNACK/SUBACK for {self.topics}")
        if self.connack is None or self.connack.is_failure:
            self.stop()
            raise ConnectionRefusedError(f"broker refused the connection: {self.connack}")
        return self

    def wait_for(self, count: int, timeout: float = 10.0) -> list[mqtt.MQTTMessage]:
        """Wait until at least `count` messages arrived; return all so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"got {len(self.messages)} of {count} messages")
                self._cond.wait(left)
            return list(self.messages)

    def quiet(self, seconds: float = 0.5) -> list[mqtt.MQTTMessage]:
        """Wait a moment and return what arrived (for asserting non-delivery)."""
        time.sleep(seconds)
        with self._cond:
            return list(self.messages)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publish_qos1(
    url: str,
    topic: str,
    payloads: Iterable[bytes | str],
    *,
    client_id: str = "",
    timeout: float = 30.0,
) -> list[ReasonCode]:
    """Publish QoS 1 and return each PUBACK's reason code, in order."""
    client, kwargs = make_client(url, client_id)
    client.max_inflight_messages_set(100)
    acks: dict[int, ReasonCode] = {}
    connected = threading.Event()
    cond = threading.Condition()
    state: dict[str, ReasonCode | None] = {"connack": None}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        state["connack"] = rc
        connected.set()

    def on_publish(_c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        with cond:
            acks[mid] = rc
            cond.notify_all()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(**kwargs)
    client.loop_start()
    try:
        if not connected.wait(5.0):
            raise TimeoutError("no CONNACK")
        connack = state["connack"]
        if connack is None or connack.is_failure:
            raise ConnectionRefusedError(f"broker refused the connection: {connack}")
        mids = [client.publish(topic, payload, qos=1).mid for payload in payloads]
        deadline = time.monotonic() + timeout
        with cond:
            while not all(mid in acks for mid in mids):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(acks)} of {len(mids)} PUBACKs")
                cond.wait(left)
        return [acks[mid] for mid in mids]
    finally:
        client.disconnect()
        client.loop_stop()


# ----------------------------------------------------------------- fixtures


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of its own for one test: persistent shared-subscription sessions
    of earlier tests would otherwise keep receiving their share of the messages."""
    with start_broker(tmp_path / "broker") as running:
        yield running


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for every test of a module that needs no fresh one."""
    with start_broker(tmp_path_factory.mktemp("broker")) as running:
        yield running
