"""What the ingester holds and what it answers: deliveries, PUBACKs, refusals.

A message is acknowledged only after every reading in it is committed or
refused-and-recorded, and only on the connection it arrived on: each connect
and each loss starts a new generation, and a message from an earlier one is
redelivered by the broker, so acknowledging it could only acknowledge the
wrong message. Until acknowledged, its payload bytes count against
max_inflight_bytes; `full()` tells the client to stop reading.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import paho.mqtt.client as mqtt

from core import metrics
from ingest.gate import refusal
from ingest.mqtt.topics import rejections_topic
from store.writer import Outcome, Parsed


@dataclass(slots=True)
class Delivery:
    """One received message, waiting for its readings to commit."""

    mid: int
    qos: int
    topic: str
    payload: bytes | bytearray
    generation: int  # connection it arrived on; acks go only on that one
    size: int = 0  # payload bytes, counted against max_inflight_bytes until acknowledged
    provider_id: str | None = None
    malformed: bool = False
    items: list[Parsed] = field(default_factory=list)


class Acks:
    """Generations, held bytes, and the answers sent on the client's connection.

    Callbacks on paho's network thread call `new_generation` and `receive`;
    the pipeline's threads call `current`, `answer` and `finish`.
    """

    def __init__(self, client: mqtt.Client, max_inflight_bytes: int) -> None:
        self.client = client
        self.max_inflight_bytes = max_inflight_bytes
        self._lock = threading.Lock()  # guards _generation and _accepting
        self._generation = 0
        self._accepting = True
        self._space = threading.Condition()  # guards _held_bytes
        self._held_bytes = 0
        self._pending_publishes: list[mqtt.MQTTMessageInfo] = []

    # paho's network thread -------------------------------------------------------

    def new_generation(self) -> None:
        """A connection was made or lost: what is held now is never acknowledged."""
        with self._lock:
            self._generation += 1

    def receive(self, msg: mqtt.MQTTMessage, enqueue: Callable[[Delivery], None]) -> None:
        """Stamp a message with its connection, enqueue it and count its bytes.

        Once closing, a message is left unacknowledged: the broker redelivers it.
        """
        with self._lock:
            if not self._accepting:
                return
            size = len(msg.payload)
            enqueue(Delivery(msg.mid, msg.qos, msg.topic, msg.payload, self._generation, size))
        with self._space:
            self._held_bytes += size
            metrics.MQTT_INFLIGHT_BYTES.set(self._held_bytes)
        metrics.MQTT_INFLIGHT.inc()

    def full(self, wait: float) -> bool:
        """True while the in-flight bytes are at the limit (waiting up to `wait` s for space)."""
        with self._space:
            if self._held_bytes >= self.max_inflight_bytes:
                self._space.wait(wait)
            return self._held_bytes >= self.max_inflight_bytes

    # The pipeline -------------------------------------------------------------

    def stop_accepting(self) -> None:
        with self._lock:
            self._accepting = False

    def current(self, delivery: Delivery) -> bool:
        """The message arrived on the connection we still have."""
        with self._lock:
            return delivery.generation == self._generation

    def answer(self, delivery: Delivery, outcomes: list[Outcome]) -> None:
        """Publish a refusal for each refused reading of a committed message, then
        acknowledge the message."""
        topic = rejections_topic(delivery.provider_id)
        for outcome in outcomes:
            if outcome.status == "rejected":
                self._publish(topic, orjson.dumps(refusal(outcome)))
        self.finish(delivery, "malformed" if delivery.malformed else "acked")

    def finish(self, delivery: Delivery, result: str) -> None:
        """Acknowledge a handled message, unless it came on a connection since lost."""
        if self.current(delivery):
            self.client.ack(delivery.mid, delivery.qos)
            metrics.MQTT_MESSAGES.labels(result).inc()
        else:
            metrics.MQTT_MESSAGES.labels("redelivery_pending").inc()
        metrics.MQTT_INFLIGHT.dec()
        with self._space:
            self._held_bytes -= delivery.size
            metrics.MQTT_INFLIGHT_BYTES.set(self._held_bytes)
            self._space.notify_all()

    def _publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        metrics.MQTT_REJECTIONS_PUBLISHED.inc()
        pending = self._pending_publishes
        pending.append(info)
        if len(pending) > 1000:
            pending[:] = [i for i in pending if not i.is_published()]

    # Stopping -----------------------------------------------------------------

    def flush(self, timeout: float, connected: threading.Event) -> None:
        """Let our refusals reach the broker before we go (while still connected)."""
        wait_until = time.monotonic() + timeout
        for info in self._pending_publishes:
            left = wait_until - time.monotonic()
            if left <= 0 or not connected.is_set():
                break
            if not info.is_published():
                try:
                    info.wait_for_publish(left)
                except (RuntimeError, ValueError):
                    break
