"""The ingester's topics and broker URLs, without a broker."""

from __future__ import annotations

import uuid

import pytest

from ingest.broker.config import ingester_client_id, parse_mqtt_url
from ingest.mqtt.topics import SUBSCRIPTION, provider_of, rejections_topic


def test_the_provider_is_the_topics_and_only_a_uuid() -> None:
    pid = str(uuid.uuid4())
    assert provider_of(f"vitals/v1/{pid}/readings") == pid
    assert provider_of(f"vitals/v1/{pid.upper()}/readings") == pid  # normalised
    for topic in (
        f"vitals/v1/{pid}/rejections",
        f"vitals/v2/{pid}/readings",
        f"vitals/v1/{pid}/readings/extra",
        "vitals/v1/not-a-uuid/readings",
        "vitals/v1//readings",
    ):
        assert provider_of(topic) is None, topic
    assert rejections_topic(pid) == f"vitals/v1/{pid}/rejections"
    assert SUBSCRIPTION == "$share/vitals/vitals/v1/+/readings"


def test_mqtt_urls() -> None:
    assert parse_mqtt_url("mqtt://u%40x:p%2Fw@broker:1884") == ("broker", 1884, "u@x", "p/w")
    assert parse_mqtt_url("mqtt://broker") == ("broker", 1883, None, None)
    for bad in ("http://broker", "mqtt://", "mqtt://broker:99999"):
        with pytest.raises(ValueError):
            parse_mqtt_url(bad)


def test_ingester_client_ids_are_stable_per_instance_and_secret() -> None:
    url = "mqtt://vitals-ingester:secret-password@127.0.0.1:1883"
    assert ingester_client_id(url, "0") == ingester_client_id(url, "0")
    assert ingester_client_id(url, "0") != ingester_client_id(url, "1")
    other = "mqtt://vitals-ingester:another-password@127.0.0.1:1883"
    assert ingester_client_id(url, "0") != ingester_client_id(other, "0")
    assert "secret" not in ingester_client_id(url, "0")
