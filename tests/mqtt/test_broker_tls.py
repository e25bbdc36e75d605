"""`vitals broker init --tls-cert/--tls-key`: a real Mosquitto with a TLS
listener (8883 in compose) beside the plain one, and a self-signed certificate."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest.broker.config import parse_mqtt_url
from tests.support.mqtt import Broker, connect_reason, mosquitto_binary
from tests.support.net import free_port
from tests.support.serve import self_signed


def _tls_connect(url: str, port: int, ca: Path | None) -> str:
    """Connect over TLS to `port` with the account in `url`; the CONNACK reason,
    or the name of the error that prevented the handshake."""
    _host, _port, username, password = parse_mqtt_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(username, password)
    if ca is not None:
        client.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    result: list[str] = []
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result.append(str(rc))
        done.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not result:
            result.append(f"disconnected: {rc}")
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect("127.0.0.1", port)
    except (OSError, ssl.SSLError) as e:
        return type(e).__name__
    client.loop_start()
    try:
        if not done.wait(5):
            return "timeout"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


@pytest.fixture
def tls_broker(tmp_path: Path) -> Any:
    mosquitto_binary()
    cert, key = self_signed(tmp_path)
    directory = tmp_path / "broker"
    port, tls_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "broker", "init", str(directory)]
        + ["--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)]
        + ["--tls-port", str(tls_port)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    broker = Broker(
        directory=directory,
        port=port,
        config=Path(info["config"]),
        admin_url=info["mqtt_admin_url"],
        ingester_url=info["mqtt_url"],
    )
    broker.start()
    try:
        yield broker, tls_port, cert
    finally:
        broker.stop()


def test_tls_listener_beside_the_plain_one(tls_broker: Any) -> None:
    broker, tls_port, cert = tls_broker
    config = broker.config.read_text()
    assert f"listener {tls_port} 127.0.0.1\ncertfile {cert}" in config
    # TLS, verified against the certificate: the accounts log in
    assert _tls_connect(broker.ingester_url, tls_port, cert) == "Success"
    # the TLS listener speaks no cleartext MQTT
    assert _tls_connect(broker.ingester_url, tls_port, None) != "Success"
    # the plain listener still works (the ingester's, inside the deployment)
    assert connect_reason(broker.ingester_url).is_failure is False


def test_half_a_tls_configuration_is_refused(tmp_path: Path) -> None:
    cert, _key = self_signed(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "broker", "init", str(tmp_path / "b")]
        + ["--tls-cert", str(cert)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert b"--tls-key" in done.stderr
