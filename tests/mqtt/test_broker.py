"""The broker set-up on a real Mosquitto: accounts, ACLs, and no loss of queued messages."""

from __future__ import annotations

import json
import stat
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.reasoncodes import ReasonCode

from ingest.broker.accounts import (
    create_provider_client,
    delete_provider_client,
    disable_provider_client,
    dynsec_commands,
    enable_provider_client,
)
from ingest.broker.config import (
    BrokerConfigExists,
    BrokerError,
    broker_init,
    ingester_client_id,
    parse_mqtt_url,
)
from tests.support.mqtt import Broker, Collector, connect_reason, make_client, publish_qos1

SHARED_READINGS = "$share/vitals/vitals/v1/+/readings"


def new_provider(broker: Broker) -> tuple[str, str, dict[str, str]]:
    """(provider_id, url, credentials) of a freshly created provider."""
    provider_id = uuid.uuid4().hex[:12]
    creds = create_provider_client(broker.admin_url, provider_id)
    return provider_id, broker.url(creds["username"], creds["password"]), creds


# ----------------------------------------------------------------- broker_init


def test_init_writes_config_and_broker_accepts_both_accounts(module_broker: Broker) -> None:
    conf = module_broker.config.read_text()
    directory = module_broker.directory.absolute()
    for line in (
        "per_listener_settings false",
        "allow_anonymous false",
        f"listener {module_broker.port} 127.0.0.1",
        f"plugin_opt_config_file {directory / 'dynamic-security.json'}",
        "persistence true",
        f"persistence_location {directory / 'data'}/",
        "max_queued_messages 0",
        "max_queued_bytes 0",
        "retain_available false",  # contract v2: retained messages are refused
        "max_packet_size 262144",  # contract v2: messages over 256 KiB are refused
        "persistent_client_expiration 1h",
    ):
        assert line in conf.splitlines()
    assert any(
        line.startswith("plugin ") and line.endswith("mosquitto_dynamic_security.so")
        for line in conf.splitlines()
    )
    dynsec = module_broker.directory / "dynamic-security.json"
    assert stat.S_IMODE(dynsec.stat().st_mode) == 0o600
    stored = dynsec.read_text()
    for url in (module_broker.admin_url, module_broker.ingester_url):
        assert str(parse_mqtt_url(url)[3]) not in stored  # only PBKDF2 hashes are kept
    assert {c["username"] for c in json.loads(stored)["clients"]} == {"admin", "vitals-ingester"}

    assert not connect_reason(module_broker.ingester_url).is_failure
    clients = dynsec_commands(module_broker.admin_url, [{"command": "listClients"}])[0]["data"]
    assert {"admin", "vitals-ingester"} <= set(clients["clients"])


def test_init_refuses_to_overwrite_a_directory_in_use(module_broker: Broker) -> None:
    dynsec = module_broker.directory / "dynamic-security.json"
    before = module_broker.config.read_bytes(), dynsec.read_bytes()
    with pytest.raises(BrokerConfigExists, match="refusing to overwrite"):
        broker_init(module_broker.directory, port=module_broker.port)
    after = module_broker.config.read_bytes(), dynsec.read_bytes()
    assert before == after
    assert not connect_reason(module_broker.ingester_url).is_failure


def test_init_urls_round_trip_through_parse_mqtt_url(tmp_path: Path) -> None:
    info = broker_init(tmp_path, port=18999)
    host, port, user, password = parse_mqtt_url(info["mqtt_url"])
    assert (host, port, user) == ("127.0.0.1", 18999, "vitals-ingester")
    assert password and len(password) >= 32
    admin = parse_mqtt_url(info["mqtt_admin_url"])
    assert admin[2] == "admin" and admin[3] != password
    assert info["config"] == str(tmp_path / "mosquitto.conf")
    assert parse_mqtt_url("mqtt://a%40b:p%3A%2F@h") == ("h", 1883, "a@b", "p:/")
    with pytest.raises(ValueError, match="scheme"):
        parse_mqtt_url("http://u:p@h:1")


# ------------------------------------------------------------- authentication


def test_anonymous_connection_is_refused(module_broker: Broker) -> None:
    rc = connect_reason(f"mqtt://127.0.0.1:{module_broker.port}")
    assert rc.is_failure, rc


def test_wrong_password_is_refused(module_broker: Broker) -> None:
    assert connect_reason(module_broker.url("vitals-ingester", "not-the-password")).is_failure
    assert connect_reason(module_broker.url("admin", "not-the-password")).is_failure


# ------------------------------------------------------------- authorisation


def test_ingester_shared_subscription_receives_a_providers_reading(module_broker: Broker) -> None:
    _, url, creds = new_provider(module_broker)
    assert creds["username"].startswith("provider-")
    with Collector(module_broker.ingester_url, SHARED_READINGS) as inbox:
        assert not inbox.granted[0].is_failure
        acks = publish_qos1(url, creds["topic"], [b'{"header": {"id": "r1"}}'])
        assert not acks[0].is_failure
        [msg] = inbox.wait_for(1)
    assert msg.topic == creds["topic"]
    assert msg.payload == b'{"header": {"id": "r1"}}'


def test_provider_cannot_publish_to_another_providers_topic(module_broker: Broker) -> None:
    _, url_a, creds_a = new_provider(module_broker)
    _, _, creds_b = new_provider(module_broker)
    with Collector(module_broker.ingester_url, SHARED_READINGS) as inbox:
        [refused] = publish_qos1(url_a, creds_b["topic"], [b"forged"])
        [accepted] = publish_qos1(url_a, creds_a["topic"], [b"own"])
        assert refused.is_failure and not accepted.is_failure
        inbox.wait_for(1)
        messages = inbox.quiet(0.5)
    assert [(m.topic, m.payload) for m in messages] == [(creds_a["topic"], b"own")]


def test_provider_reads_only_its_own_rejections(module_broker: Broker) -> None:
    id_a, url_a, _ = new_provider(module_broker)
    id_b, _, _ = new_provider(module_broker)
    own, other = f"vitals/v1/{id_a}/rejections", f"vitals/v1/{id_b}/rejections"
    with Collector(url_a, own, other, f"vitals/v1/{id_a}/readings", "#") as inbox:
        own_rc, other_rc, readings_rc, all_rc = inbox.granted
        assert not own_rc.is_failure
        assert other_rc.is_failure and readings_rc.is_failure and all_rc.is_failure
        rejection = b'{"id": "r1", "reason": "no_consent", "detail": ""}'
        assert not publish_qos1(module_broker.ingester_url, own, [rejection])[0].is_failure
        assert not publish_qos1(module_broker.ingester_url, other, [b"not for A"])[0].is_failure
        inbox.wait_for(1)
        messages = inbox.quiet(0.5)
    assert [(m.topic, m.payload) for m in messages] == [(own, rejection)]


def test_admin_and_ingester_are_confined_to_their_topics(module_broker: Broker) -> None:
    with Collector(module_broker.admin_url, "#", "vitals/v1/+/readings") as admin:
        assert all(rc.is_failure for rc in admin.granted)
    [forged] = publish_qos1(module_broker.ingester_url, "vitals/v1/x/readings", [b"{}"])
    assert forged.is_failure


def test_a_provider_cannot_log_in_under_the_ingesters_session(broker: Broker) -> None:
    _, url, creds = new_provider(broker)
    session = {"client_id": f"ingester-{uuid.uuid4().hex}", "session_expiry": 3600}
    Collector(broker.ingester_url, SHARED_READINGS, clean_start=False, **session).start().stop()
    publish_qos1(url, creds["topic"], [b"health data"])
    # Provider accounts are bound to their own client id: any other is refused.
    with pytest.raises(ConnectionRefusedError):
        Collector(url, clean_start=False, **session).start()
    # The real ingester id is derived from its password, so providers cannot guess it.
    assert ingester_client_id(broker.ingester_url) != ingester_client_id(broker.admin_url)
    assert ingester_client_id(broker.ingester_url) == ingester_client_id(broker.ingester_url)


def test_a_provider_cannot_take_over_another_providers_client_id(module_broker: Broker) -> None:
    id_a, url_a, creds_a = new_provider(module_broker)
    _, url_b, creds_b = new_provider(module_broker)
    a_client_id = f"provider-{id_a}"  # what A's device connects with
    rejections = f"vitals/v1/{id_a}/rejections"
    with Collector(url_a, rejections, client_id=a_client_id) as device_a:
        refused = connect_reason(url_b, a_client_id)
        assert refused.is_failure, refused
        assert not device_a.disconnected.wait(1.0), "B's login with A's client id dropped A"
        # A's connection still works.
        publish_qos1(module_broker.ingester_url, rejections, [b'{"id": "r", "reason": "x"}'])
        device_a.wait_for(1)
    # Each account logs in only with its own client id (an empty one too is refused).
    assert connect_reason(url_b, "some-other-id").is_failure
    assert not connect_reason(url_b, creds_b["client_id"]).is_failure
    assert creds_a["client_id"] == a_client_id != creds_b["client_id"]


# ------------------------------------------------------------ provider lifecycle


def test_disabled_provider_cannot_connect_until_enabled(module_broker: Broker) -> None:
    provider_id, url, creds = new_provider(module_broker)
    assert not connect_reason(url).is_failure
    disable_provider_client(module_broker.admin_url, provider_id)
    assert connect_reason(url).is_failure
    with pytest.raises(ConnectionRefusedError):
        publish_qos1(url, creds["topic"], [b"{}"])
    enable_provider_client(module_broker.admin_url, provider_id)
    assert not connect_reason(url).is_failure
    delete_provider_client(module_broker.admin_url, provider_id)
    assert connect_reason(url).is_failure
    roles = dynsec_commands(module_broker.admin_url, [{"command": "listRoles"}])[0]["data"]["roles"]
    assert creds["username"] not in roles


def test_disabling_drops_a_live_provider_connection(module_broker: Broker) -> None:
    provider_id, url, _ = new_provider(module_broker)
    with Collector(url, f"vitals/v1/{provider_id}/rejections") as live:
        disable_provider_client(module_broker.admin_url, provider_id)
        assert live.disconnected.wait(5.0), "the broker kept the disabled client connected"


def test_provider_management_errors_are_clear(module_broker: Broker) -> None:
    provider_id, _, _ = new_provider(module_broker)
    with pytest.raises(BrokerError, match="already exists"):
        create_provider_client(module_broker.admin_url, provider_id)
    with pytest.raises(BrokerError, match="not found"):
        disable_provider_client(module_broker.admin_url, "never-created")
    with pytest.raises(ValueError, match="invalid provider id"):
        create_provider_client(module_broker.admin_url, "a/#")
    with pytest.raises(BrokerError, match="refused the admin login"):
        create_provider_client(module_broker.url("admin", "wrong"), "p-wrong")
    with pytest.raises(BrokerError, match="may not use dynamic security"):
        create_provider_client(module_broker.ingester_url, "p-not-admin", timeout=1.0)
    with pytest.raises(BrokerError, match="cannot reach"):
        create_provider_client("mqtt://admin:x@127.0.0.1:1", "p-unreachable")


# ---------------------------------------------------------------- no data loss


def publish_raw(
    url: str, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 5.0
) -> tuple[ReasonCode | None, ReasonCode | None]:
    """Publish QoS 1 as a provider's device; (PUBACK reason, DISCONNECT reason), None if absent."""
    client, kwargs = make_client(url)
    connected, done = threading.Event(), threading.Event()
    state: dict[str, ReasonCode | None] = {"puback": None, "disconnect": None}

    def on_publish(_c: Any, _u: Any, _m: int, rc: ReasonCode, _p: Any) -> None:
        state["puback"] = rc
        done.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        state["disconnect"] = rc
        done.set()

    client.on_connect = lambda *_a: connected.set()
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    client.connect(**kwargs)
    client.loop_start()
    try:
        assert connected.wait(5.0), "no CONNACK"
        client.publish(topic, payload, qos=1, retain=retain)
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return state["puback"], state["disconnect"]


def test_messages_larger_than_256_kib_are_refused_by_the_broker(module_broker: Broker) -> None:
    _, url, creds = new_provider(module_broker)
    big, fits = b"x" * (256 * 1024 + 1), b"y" * (200 * 1024)
    with Collector(module_broker.ingester_url, SHARED_READINGS) as inbox:
        puback, disconnect = publish_raw(url, creds["topic"], big)
        assert puback is None or puback.is_failure, puback
        assert disconnect is not None and disconnect.is_failure, disconnect
        assert not publish_qos1(url, creds["topic"], [fits])[0].is_failure
        inbox.wait_for(1)
        received = inbox.quiet(0.5)
    assert [len(m.payload) for m in received] == [len(fits)]


def test_a_retained_publish_is_refused_and_kept_nowhere(broker: Broker) -> None:
    _, url, creds = new_provider(broker)
    secret = f"retained-health-data-{uuid.uuid4().hex}".encode()
    puback, disconnect = publish_raw(url, creds["topic"], secret, retain=True)
    # MQTT 5: "Retain not supported" (0x9A), the connection is closed.
    assert disconnect is not None and disconnect.value == 0x9A, (puback, disconnect)
    assert puback is None or puback.is_failure
    with Collector(broker.ingester_url, "vitals/v1/+/readings") as late:
        assert late.quiet(1.0) == []
    broker.stop()  # SIGTERM: the broker writes its persistence store
    store = broker.directory / "data" / "mosquitto.db"
    assert store.exists()
    assert secret not in store.read_bytes()


def test_reapplying_the_config_clears_retained_messages_and_keeps_the_rest(
    broker: Broker,
) -> None:
    # A broker set up by an older version: retained messages allowed.
    config = broker.config.read_text()
    broker.stop()
    broker.config.write_text(config.replace("retain_available false", "retain_available true"))
    broker.start()
    _, url_a, creds_a = new_provider(broker)
    # An account made before provider accounts were bound to a client id.
    old = f"provider-{uuid.uuid4().hex[:12]}"
    dynsec_commands(
        broker.admin_url,
        [{"command": "createClient", "username": old, "password": "p" * 20, "roles": []}],
    )
    assert not connect_reason(broker.url(old, "p" * 20), "anything").is_failure
    retained = f"retained-{uuid.uuid4().hex}".encode()
    queued = f"queued-{uuid.uuid4().hex}".encode()
    assert publish_raw(url_a, creds_a["topic"], retained, retain=True)[0] is not None
    with Collector(broker.ingester_url, "vitals/v1/+/readings") as late:
        assert [m.payload for m in late.wait_for(1)] == [retained]  # the old hazard
    # A session queueing B's readings (a shared subscription is sent retained
    # messages too in Mosquitto 2.0.11: its queue would hold A's retained one).
    _, url_b, creds_b = new_provider(broker)
    session = {"client_id": f"ingester-{uuid.uuid4().hex}", "session_expiry": 3600}
    shared_b = f"$share/vitals/{creds_b['topic']}"
    Collector(broker.ingester_url, shared_b, clean_start=False, **session).start().stop()
    assert not publish_qos1(url_b, creds_b["topic"], [queued])[0].is_failure
    broker.stop()
    store = broker.directory / "data" / "mosquitto.db"
    assert retained in store.read_bytes()

    result = broker_init(broker.directory, port=broker.port, reapply=True)
    assert result["retained_cleared"] == 1 and result["clients_bound"] == 1
    assert "mqtt_url" not in result  # passwords are kept, not reissued
    assert "retain_available false" in broker.config.read_text()
    data = store.read_bytes()
    assert retained not in data and queued in data

    broker.start()
    with Collector(broker.ingester_url, "vitals/v1/+/readings") as late:
        assert late.quiet(1.0) == []
    with Collector(broker.ingester_url, clean_start=False, **session) as resumed:
        assert resumed.session_present
        assert [m.payload for m in resumed.wait_for(1)] == [queued]
    # Accounts survive the reapply; the old one is now bound to its username.
    assert not connect_reason(url_a).is_failure and not connect_reason(url_b).is_failure
    assert connect_reason(broker.url(old, "p" * 20), "anything").is_failure
    assert not connect_reason(broker.url(old, "p" * 20), old).is_failure
    broker.stop()
    assert retained not in store.read_bytes()


def test_reading_published_while_ingester_offline_is_delivered_on_reconnect(
    broker: Broker,
) -> None:
    _, url, creds = new_provider(broker)
    session = {
        "client_id": f"ingester-{uuid.uuid4().hex}",
        "clean_start": False,
        "session_expiry": 3600,
    }
    Collector(broker.ingester_url, SHARED_READINGS, **session).start().stop()
    assert not publish_qos1(url, creds["topic"], [b"while offline"])[0].is_failure
    with Collector(broker.ingester_url, **session) as inbox:
        assert inbox.session_present
        [msg] = inbox.wait_for(1)
    assert (msg.topic, msg.payload, msg.qos) == (creds["topic"], b"while offline", 1)


@pytest.mark.slow
def test_5000_queued_readings_survive_a_broker_restart(broker: Broker) -> None:
    _, url, creds = new_provider(broker)
    session = {
        "client_id": ingester_client_id(broker.ingester_url),
        "clean_start": False,
        "session_expiry": 3600,
    }
    Collector(broker.ingester_url, SHARED_READINGS, **session).start().stop()
    payloads = [f'{{"header": {{"id": "r{i}"}}}}'.encode() for i in range(5000)]
    acks = publish_qos1(url, creds["topic"], payloads, timeout=60)
    assert not any(rc.is_failure for rc in acks)

    broker.restart()  # SIGTERM: the broker saves its store, then starts from it

    with Collector(broker.ingester_url, **session) as inbox:
        assert inbox.session_present
        inbox.wait_for(5000, timeout=60)
        received = inbox.quiet(0.5)
    assert sorted(m.payload for m in received) == sorted(payloads)
    assert len(received) == 5000
