"""The broker set-up on a real Mosquitto: accounts, ACLs, and no loss of queued messages."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_helpers import Broker, Collector, connect_reason, publish_qos1, start_broker

from ingest.broker import (
    BrokerConfigExists,
    BrokerError,
    broker_init,
    ingester_client_id,
    parse_mqtt_url,
)
from ingest.broker_accounts import (
    create_provider_client,
    delete_provider_client,
    disable_provider_client,
    dynsec_commands,
    enable_provider_client,
)

SHARED_READINGS = "$share/vitals/vitals/v1/+/readings"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with start_broker(tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    with start_broker(tmp_path / "broker") as running:
        yield running


def new_provider(broker: Broker) -> tuple[str, str, dict[str, str]]:
    """(provider_id, url, credentials) of a freshly created provider."""
    provider_id = uuid.uuid4().hex[:12]
    creds = create_provider_client(broker.admin_url, provider_id)
    return provider_id, broker.url(creds["username"], creds["password"]), creds


# ----------------------------------------------------------------- broker_init


def test_init_writes_config_and_broker_accepts_both_accounts(broker: Broker) -> None:
    conf = broker.config.read_text()
    directory = broker.directory.absolute()
    for line in (
        "per_listener_settings false",
        "allow_anonymous false",
        f"listener {broker.port} 127.0.0.1",
        f"plugin_opt_config_file {directory / 'dynamic-security.json'}",
        "persistence true",
        f"persistence_location {directory / 'data'}/",
        "max_queued_messages 0",
        "max_queued_bytes 0",
    ):
        assert line in conf.splitlines()
    assert any(
        line.startswith("plugin ") and line.endswith("mosquitto_dynamic_security.so")
        for line in conf.splitlines()
    )
    dynsec = broker.directory / "dynamic-security.json"
    assert stat.S_IMODE(dynsec.stat().st_mode) == 0o600
    stored = dynsec.read_text()
    for url in (broker.admin_url, broker.ingester_url):
        assert str(parse_mqtt_url(url)[3]) not in stored  # only PBKDF2 hashes are kept
    assert {c["username"] for c in json.loads(stored)["clients"]} == {"admin", "vitals-ingester"}

    assert not connect_reason(broker.ingester_url).is_failure
    clients = dynsec_commands(broker.admin_url, [{"command": "listClients"}])[0]["data"]
    assert {"admin", "vitals-ingester"} <= set(clients["clients"])


def test_init_refuses_to_overwrite_a_directory_in_use(broker: Broker) -> None:
    before = broker.config.read_bytes(), (broker.directory / "dynamic-security.json").read_bytes()
    with pytest.raises(BrokerConfigExists, match="refusing to overwrite"):
        broker_init(broker.directory, port=broker.port)
    after = broker.config.read_bytes(), (broker.directory / "dynamic-security.json").read_bytes()
    assert before == after
    assert not connect_reason(broker.ingester_url).is_failure


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


def test_anonymous_connection_is_refused(broker: Broker) -> None:
    rc = connect_reason(f"mqtt://127.0.0.1:{broker.port}")
    assert rc.is_failure, rc


def test_wrong_password_is_refused(broker: Broker) -> None:
    assert connect_reason(broker.url("vitals-ingester", "not-the-password")).is_failure
    assert connect_reason(broker.url("admin", "not-the-password")).is_failure


# ------------------------------------------------------------- authorisation


def test_ingester_shared_subscription_receives_a_providers_reading(broker: Broker) -> None:
    _, url, creds = new_provider(broker)
    assert creds["username"].startswith("provider-")
    with Collector(broker.ingester_url, SHARED_READINGS) as inbox:
        assert not inbox.granted[0].is_failure
        acks = publish_qos1(url, creds["topic"], [b'{"header": {"id": "r1"}}'])
        assert not acks[0].is_failure
        [msg] = inbox.wait_for(1)
    assert msg.topic == creds["topic"]
    assert msg.payload == b'{"header": {"id": "r1"}}'


def test_provider_cannot_publish_to_another_providers_topic(broker: Broker) -> None:
    _, url_a, creds_a = new_provider(broker)
    _, _, creds_b = new_provider(broker)
    with Collector(broker.ingester_url, SHARED_READINGS) as inbox:
        [refused] = publish_qos1(url_a, creds_b["topic"], [b"forged"])
        [accepted] = publish_qos1(url_a, creds_a["topic"], [b"own"])
        assert refused.is_failure and not accepted.is_failure
        inbox.wait_for(1)
        messages = inbox.quiet(0.5)
    assert [(m.topic, m.payload) for m in messages] == [(creds_a["topic"], b"own")]


def test_provider_reads_only_its_own_rejections(broker: Broker) -> None:
    id_a, url_a, _ = new_provider(broker)
    id_b, _, _ = new_provider(broker)
    own, other = f"vitals/v1/{id_a}/rejections", f"vitals/v1/{id_b}/rejections"
    with Collector(url_a, own, other, f"vitals/v1/{id_a}/readings", "#") as inbox:
        own_rc, other_rc, readings_rc, all_rc = inbox.granted
        assert not own_rc.is_failure
        assert other_rc.is_failure and readings_rc.is_failure and all_rc.is_failure
        rejection = b'{"id": "r1", "reason": "no_consent", "detail": ""}'
        assert not publish_qos1(broker.ingester_url, own, [rejection])[0].is_failure
        assert not publish_qos1(broker.ingester_url, other, [b"not for A"])[0].is_failure
        inbox.wait_for(1)
        messages = inbox.quiet(0.5)
    assert [(m.topic, m.payload) for m in messages] == [(own, rejection)]


def test_admin_and_ingester_are_confined_to_their_topics(broker: Broker) -> None:
    with Collector(broker.admin_url, "#", "vitals/v1/+/readings") as admin:
        assert all(rc.is_failure for rc in admin.granted)
    [forged] = publish_qos1(broker.ingester_url, "vitals/v1/x/readings", [b"{}"])
    assert forged.is_failure


def test_a_provider_taking_over_the_ingesters_session_reads_nothing(own_broker: Broker) -> None:
    broker = own_broker  # persistent shared-subscription sessions stay in the group
    _, url, creds = new_provider(broker)
    session = {"client_id": f"ingester-{uuid.uuid4().hex}", "session_expiry": 3600}
    Collector(broker.ingester_url, SHARED_READINGS, clean_start=False, **session).start().stop()
    publish_qos1(url, creds["topic"], [b"health data"])
    with Collector(url, clean_start=False, **session) as thief:
        assert thief.quiet(1.0) == []
    # The real ingester id is derived from its password, so providers cannot guess it.
    assert ingester_client_id(broker.ingester_url) != ingester_client_id(broker.admin_url)
    assert ingester_client_id(broker.ingester_url) == ingester_client_id(broker.ingester_url)


# ------------------------------------------------------------ provider lifecycle


def test_disabled_provider_cannot_connect_until_enabled(broker: Broker) -> None:
    provider_id, url, creds = new_provider(broker)
    assert not connect_reason(url).is_failure
    disable_provider_client(broker.admin_url, provider_id)
    assert connect_reason(url).is_failure
    with pytest.raises(ConnectionRefusedError):
        publish_qos1(url, creds["topic"], [b"{}"])
    enable_provider_client(broker.admin_url, provider_id)
    assert not connect_reason(url).is_failure
    delete_provider_client(broker.admin_url, provider_id)
    assert connect_reason(url).is_failure
    roles = dynsec_commands(broker.admin_url, [{"command": "listRoles"}])[0]["data"]["roles"]
    assert creds["username"] not in roles


def test_disabling_drops_a_live_provider_connection(broker: Broker) -> None:
    provider_id, url, _ = new_provider(broker)
    with Collector(url, f"vitals/v1/{provider_id}/rejections") as live:
        disable_provider_client(broker.admin_url, provider_id)
        assert live.disconnected.wait(5.0), "the broker kept the disabled client connected"


def test_provider_management_errors_are_clear(broker: Broker) -> None:
    provider_id, _, _ = new_provider(broker)
    with pytest.raises(BrokerError, match="already exists"):
        create_provider_client(broker.admin_url, provider_id)
    with pytest.raises(BrokerError, match="not found"):
        disable_provider_client(broker.admin_url, "never-created")
    with pytest.raises(ValueError, match="invalid provider id"):
        create_provider_client(broker.admin_url, "a/#")
    with pytest.raises(BrokerError, match="refused the admin login"):
        create_provider_client(broker.url("admin", "wrong"), "p-wrong")
    with pytest.raises(BrokerError, match="may not use dynamic security"):
        create_provider_client(broker.ingester_url, "p-not-admin", timeout=1.0)
    with pytest.raises(BrokerError, match="cannot reach"):
        create_provider_client("mqtt://admin:x@127.0.0.1:1", "p-unreachable")


# ---------------------------------------------------------------- no data loss


def test_payload_larger_than_ingester_limit_still_reaches_the_ingester(broker: Broker) -> None:
    _, url, creds = new_provider(broker)
    big = b"x" * (5 * 1024 * 1024)
    with Collector(broker.ingester_url, SHARED_READINGS) as inbox:
        assert not publish_qos1(url, creds["topic"], [big])[0].is_failure
        [msg] = inbox.wait_for(1, timeout=20)
    assert len(msg.payload) == len(big)


def test_reading_published_while_ingester_offline_is_delivered_on_reconnect(
    own_broker: Broker,
) -> None:
    broker = own_broker
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
def test_5000_queued_readings_survive_a_broker_restart(own_broker: Broker) -> None:
    _, url, creds = new_provider(own_broker)
    session = {
        "client_id": ingester_client_id(own_broker.ingester_url),
        "clean_start": False,
        "session_expiry": 3600,
    }
    Collector(own_broker.ingester_url, SHARED_READINGS, **session).start().stop()
    payloads = [f'{{"header": {{"id": "r{i}"}}}}'.encode() for i in range(5000)]
    acks = publish_qos1(url, creds["topic"], payloads, timeout=60)
    assert not any(rc.is_failure for rc in acks)

    own_broker.restart()  # SIGTERM: the broker saves its store, then starts from it

    with Collector(own_broker.ingester_url, **session) as inbox:
        assert inbox.session_present
        inbox.wait_for(5000, timeout=60)
        received = inbox.quiet(0.5)
    assert sorted(m.payload for m in received) == sorted(payloads)
    assert len(received) == 5000
