"""How the simulated providers send: QoS 1 MQTT publishes with the provider's
own broker account, or signed webhooks, paced over the send window."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt

from ingest.broker.config import parse_mqtt_url
from ingest.http.signatures import sign

SEND_SECONDS = 20.0  # the simulator spreads its traffic over this long


class Publisher:
    """One provider's gateway: QoS1 publishes of arrays, waiting for every PUBACK."""

    def __init__(self, url: str, topic: str, client_id: str) -> None:
        host, port, user, password = parse_mqtt_url(url)
        self.topic = topic
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,  # the broker binds the provider's account to it
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(user, password)
        self.client.max_inflight_messages_set(50)
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, payloads: list[bytes]) -> None:
        infos = [self.client.publish(self.topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(60)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def paced(i: int, step: int, n: int, t0: float) -> None:
    """Sleep until chunk i + step is due, so traffic spreads over SEND_SECONDS."""
    due = t0 + SEND_SECONDS * min(1.0, (i + step) / max(n, 1))
    time.sleep(max(0.0, due - time.monotonic()))


def send(
    p: dict[str, Any],
    transport: str,
    chunks: list[list[dict[str, Any]]],
    broker: dict[str, str] | None,
    api_base: str,
    errors: list[str],
) -> None:
    """Send one provider's chunks of data points (a thread's target): over MQTT,
    four chunks a publish round and one malformed message at the end, or as
    signed webhooks of five chunks each. A failure is appended to `errors`."""
    t0 = time.monotonic()
    try:
        if transport == "mqtt" and p.get("mqtt") and broker:
            pub = Publisher(
                f"mqtt://{p['mqtt']['username']}:{p['mqtt']['password']}@127.0.0.1:"
                f"{parse_mqtt_url(broker['mqtt_url'])[1]}",
                p["mqtt"]["topic"],
                p["mqtt"]["client_id"],
            )
            for i in range(0, len(chunks), 4):
                pub.send([orjson.dumps(c) for c in chunks[i : i + 4]])
                paced(i, 4, len(chunks), t0)
            pub.send([b"{not json"])
            pub.close()
        else:
            with httpx.Client(base_url=api_base, timeout=60) as client:
                for i in range(0, len(chunks), 5):
                    body = orjson.dumps([pt for c in chunks[i : i + 5] for pt in c])
                    r = client.post(
                        f"/v1/providers/{p['provider_id']}/readings",
                        content=body,
                        headers={
                            "Content-Type": "application/json",
                            "Vitals-Signature": sign(p["webhook_secret"], body),
                        },
                    )
                    r.raise_for_status()
                    paced(i, 5, len(chunks), t0)
    except Exception as e:  # reported, never hidden
        errors.append(f"{transport} sender: {e!r}")
