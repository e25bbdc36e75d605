"""The MQTT ingester: a paho client, thin callbacks, the pipeline, a draining stop.

    broker ──$share/vitals/vitals/v1/+/readings──▶ on_message (enqueue only)
          ──▶ pipeline (ingest.mqtt.pipeline: parse through the gate, commit)
          ──▶ acks (ingest.mqtt.acks: publish refusals, PUBACK)

A message is acknowledged only after every reading in it is committed or
refused-and-recorded, so a crash loses nothing (the broker redelivers the
session's unacknowledged messages) and a redelivery stores nothing twice (the
writer's dedup).

Memory is bounded twice while the database is down: by the MQTT 5 Receive
Maximum (the broker sends at most that many unacknowledged messages) and by
max_inflight_bytes: once the payloads received and not yet acknowledged reach
it, the network thread stops reading from the socket (PUBACKs and pings still
go out) until acknowledgements free space, so the broker holds the rest. The
overshoot is at most one message (the broker refuses packets over 256 KiB).
A pause longer than the keepalive (30 s) makes paho recycle the connection;
nothing is lost (unacknowledged messages are redelivered, the writer drops
duplicates).

Sessions: each instance has a persistent session under a stable client id
(`--instance`, or `auto`: the lowest free slot, claimed by a file lock shared
by the replicas, ingest.mqtt.instance), so a restarted or recreated instance
resumes its queue. The session expiry (`--session-expiry`, default 300 s)
bounds how long the broker keeps a vanished instance's session: Mosquitto 2.0
keeps giving an offline member of a shared subscription its share, so an
instance that never comes back holds readings (PUBACKed to devices, outside
consent and erasure) for at most that long, after which the broker discards
them with the session.

Mosquitto 2.0.11 does not restore shared subscriptions from its persistence
store: after a broker restart, until an ingester has reconnected (it
resubscribes in on_connect), the broker answers a device's publish with PUBACK
0x10 "No matching subscribers" and delivers it to no one. Devices must treat
0x10 as "not delivered" and send again (tests/mqtt/test_ingester_faults.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core import metrics
from ingest.broker.config import ingester_client_id, parse_mqtt_url
from ingest.gate import Gate
from ingest.mqtt.acks import Acks
from ingest.mqtt.client import ByteLimitedClient
from ingest.mqtt.pipeline import Pipeline
from ingest.mqtt.topics import SUBSCRIPTION

log = logging.getLogger("vitals.mqtt")

SESSION_EXPIRY = 300  # seconds the broker keeps our session (and its share) while we are away
RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may send us
MAX_INFLIGHT_BYTES = 64 * 1024 * 1024  # payload bytes received and not yet acknowledged


class Ingester:
    """Consume readings from the broker through the gate; see the module docstring."""

    def __init__(
        self,
        mqtt_url: str,
        gate: Gate,
        *,
        instance: str = "0",
        receive_maximum: int = RECEIVE_MAXIMUM,
        max_inflight_bytes: int = MAX_INFLIGHT_BYTES,
        session_expiry: int = SESSION_EXPIRY,
        batch_max_readings: int = 5000,
        batch_wait: float = 0.05,
        drain_timeout: float = 30.0,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if not 0 < receive_maximum <= 65535:
            raise ValueError("receive maximum must be within 1..65535")
        if max_inflight_bytes <= 0:
            raise ValueError("max in-flight bytes must be positive")
        if not 0 <= session_expiry < 0xFFFFFFFF:
            raise ValueError("session expiry must be within 0..4294967294 seconds")
        metrics.register_transport(gate.transport)
        self.drain_timeout = drain_timeout
        self.host, self.port, username, password = parse_mqtt_url(mqtt_url)
        self.client_id = ingester_client_id(mqtt_url, instance)
        self._receive_maximum = receive_maximum
        self._session_expiry = session_expiry
        self.connected = threading.Event()
        self._gone = threading.Event()  # set once our own DISCONNECT has gone out

        self.client = ByteLimitedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        self.acks = Acks(self.client, max_inflight_bytes)
        self.pipeline = Pipeline(
            gate,
            self.acks,
            batch_max_readings=batch_max_readings,
            batch_wait=batch_wait,
            backoff=backoff,
        )
        self.failed = self.pipeline.failed  # a worker died of a bug
        self.client.paused = self.acks.full
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.max_inflight_messages_set(1000)  # our own refusals, outgoing
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # ------------------------------------------------------------ paho callbacks
    # They run on paho's network thread: convert and enqueue, nothing more.

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if rc.is_failure:
            log.error(
                "broker refused the ingester's login; retrying",
                extra={"event": "connect_refused", "error": str(rc)},
            )
            return
        self.acks.new_generation()
        self.connected.set()
        log.info(
            "connected",
            extra={"event": "connected", "host": self.host, "port": self.port},
        )
        # Subscribe on every connect: harmless when the session already has it.
        client.subscribe(SUBSCRIPTION, options=SubscribeOptions(qos=1))

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Properties | None
    ) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error(
                "broker refused the readings subscription (check the ingester's role)",
                extra={"event": "subscribe_refused", "error": str(rcs[0])},
            )
        else:
            metrics.MQTT_CONNECTED.set(1)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.acks.new_generation()  # what we hold now will be redelivered: never ack it
        metrics.MQTT_CONNECTED.set(0)
        self.connected.clear()
        if self.pipeline.closing.is_set():
            self._gone.set()
        else:
            log.warning(
                "disconnected from the broker; reconnecting",
                extra={"event": "disconnected", "error": str(rc)},
            )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.acks.receive(msg, self.pipeline.enqueue)
        except Exception:  # never let a callback break paho's loop
            log.exception("could not enqueue a message", extra={"event": "enqueue_error"})

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry
        props.ReceiveMaximum = self._receive_maximum
        self.client.connect_async(
            self.host, self.port, keepalive=30, clean_start=False, properties=props
        )
        self.client.loop_start()
        self.pipeline.start()

    def stop(self) -> bool:
        """Drain: take nothing new, commit and acknowledge what is held, disconnect.

        Returns False when the database stayed unavailable for drain_timeout
        (then what was held is left unacknowledged for redelivery).
        """
        self.acks.stop_accepting()
        drained = self.pipeline.drain(self.drain_timeout)
        self.acks.flush(5.0, self.connected)
        # The network thread sends the queued PUBACKs, then the DISCONNECT, and
        # closes only once the broker has read them (ByteLimitedClient._sock_close);
        # stopping it before that closed the socket with acknowledgements still
        # queued or unread, and the broker redelivered committed messages.
        if self.client.disconnect() == mqtt.MQTT_ERR_SUCCESS:
            self._gone.wait(5.0)
        self.client.loop_stop()
        metrics.MQTT_CONNECTED.set(0)
        return drained
