"""`vitals mqtt`: the MQTT ingester.

    broker ──$share/vitals/vitals/v1/+/readings──▶ on_message (enqueue only)
          ──▶ parser thread (decode, gate.parse_payload, batch across messages)
          ──▶ committer thread (Writer.write: one transaction) ──▶ publish refusals, PUBACK

A message is acknowledged only after every reading in it is committed or
refused-and-recorded, so a crash loses nothing (the broker redelivers the
session's unacknowledged messages) and a redelivery stores nothing twice (the
writer's dedup). The provider is the topic's, which the broker's ACL pins to
the publishing account; the payload is never trusted for it.

Memory is bounded by the MQTT 5 Receive Maximum: the broker sends at most that
many unacknowledged messages, so while the database is down the ingester stops
acknowledging and the broker holds the rest.

Mosquitto 2.0.11 does not restore shared subscriptions from its persistence
store: after a broker restart, until an ingester has reconnected (it
resubscribes in on_connect), the broker answers a device's publish with PUBACK
0x10 "No matching subscribers" and delivers it to no one. Devices must treat
0x10 as "not delivered" and send again (tests/integration/test_mqtt_faults.py).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter, Gauge, start_http_server

from ingest.broker import SHARE_GROUP, ingester_client_id, parse_mqtt_url
from ingest.db import StorageError, StorageUnavailable, make_pool
from ingest.gate import ShapeError, parse_payload
from ingest.settings import Settings, SettingsError
from ingest.writer import Outcome, Parsed, Writer
from schemas.reading import INVALID_SCHEMA, Refusal

log = logging.getLogger("vitals.mqtt")

TRANSPORT = "mqtt"
SUBSCRIPTION = f"$share/{SHARE_GROUP}/vitals/v1/+/readings"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ITEMS = 5000  # data points per message, as for one HTTP request
SESSION_EXPIRY = 7 * 24 * 3600  # the broker keeps our queue this long while we are away
RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may send us

MESSAGES = Counter(
    "vitals_mqtt_messages_total",
    "MQTT messages by what became of them",
    ["result"],  # acked | malformed | foreign_topic | redelivery_pending (connection lost)
)
INFLIGHT = Gauge("vitals_mqtt_inflight_messages", "Messages received and not yet acknowledged")
CONNECTED = Gauge("vitals_mqtt_connected", "1 while connected and subscribed to readings")
REJECTIONS_PUBLISHED = Counter(
    "vitals_mqtt_rejections_published_total", "Refusals published on rejections topics"
)


def provider_of(topic: str) -> str | None:
    """`vitals/v1/{provider_id}/readings` → provider_id (a UUID), else None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[:2] != ["vitals", "v1"] or parts[3] != "readings":
        return None
    try:
        return str(uuid.UUID(parts[2]))
    except ValueError:
        return None


def parse_message(payload: bytes | bytearray, now: datetime) -> list[Parsed]:
    """A message's payload → parsed readings/refusals, one per data point.

    Raises ShapeError when the message as a whole is malformed: larger than
    256 KiB, not JSON, or not a data point / array of them.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ShapeError(f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ShapeError("payload is not valid JSON") from None
    return parse_payload(decoded, "omh", now=now, max_items=MAX_ITEMS)


@dataclass(slots=True)
class Delivery:
    """One received message, waiting for its readings to commit."""

    mid: int
    qos: int
    topic: str
    payload: bytes | bytearray
    generation: int  # connection it arrived on; acks go only on that one
    provider_id: str | None = None
    malformed: bool = False
    items: list[Parsed] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    deliveries: list[Delivery]
    readings: int


def refusal_message(outcome: Outcome) -> bytes:
    return orjson.dumps({"id": outcome.id, "reason": outcome.reason, "detail": outcome.detail})


class Ingester:
    """Consume readings from the broker into the writer; see the module docstring."""

    def __init__(
        self,
        mqtt_url: str,
        writer: Writer,
        *,
        instance: str = "0",
        receive_maximum: int = RECEIVE_MAXIMUM,
        batch_max_readings: int = 5000,
        batch_wait: float = 0.05,
        drain_timeout: float = 30.0,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if not 0 < receive_maximum <= 65535:
            raise ValueError("receive maximum must be within 1..65535")
        self.writer = writer
        self.batch_max_readings = batch_max_readings
        self.batch_wait = batch_wait
        self.drain_timeout = drain_timeout
        self.backoff = backoff
        self._host, self._port, username, password = parse_mqtt_url(mqtt_url)
        self.client_id = ingester_client_id(mqtt_url, instance)
        self._receive_maximum = receive_maximum

        self._incoming: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._batches: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._lock = threading.Lock()
        self._generation = 0
        self._accepting = True
        self._closing = threading.Event()  # SIGTERM: take nothing new, finish what we hold
        self._abort = threading.Event()  # give up draining (database still down)
        self._busy = threading.Event()  # the committer is writing or acknowledging
        self.failed = threading.Event()  # a worker died of a bug
        self.connected = threading.Event()
        self._gone = threading.Event()  # set once our own DISCONNECT has gone out
        self._pending_publishes: list[mqtt.MQTTMessageInfo] = []

        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.max_inflight_messages_set(1000)  # our own refusals, outgoing
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._threads = [
            threading.Thread(target=self._guard(self._parse_loop), name="mqtt-parse"),
            threading.Thread(target=self._guard(self._commit_loop), name="mqtt-commit"),
        ]

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
        with self._lock:
            self._generation += 1
        self.connected.set()
        log.info(
            "connected",
            extra={"event": "connected", "host": self._host, "port": self._port},
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
            CONNECTED.set(1)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        with self._lock:
            self._generation += 1  # what we hold now will be redelivered: never ack it
        CONNECTED.set(0)
        self.connected.clear()
        if self._closing.is_set():
            self._gone.set()
        else:
            log.warning(
                "disconnected from the broker; reconnecting",
                extra={"event": "disconnected", "error": str(rc)},
            )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            with self._lock:
                if not self._accepting:
                    return  # closing: left unacknowledged, the broker redelivers it
                self._incoming.put(
                    Delivery(msg.mid, msg.qos, msg.topic, msg.payload, self._generation)
                )
            INFLIGHT.inc()
        except Exception:  # never let a callback break paho's loop
            log.exception("could not enqueue a message", extra={"event": "enqueue_error"})

    # ------------------------------------------------------------------ workers

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException:
                log.exception("ingester worker failed", extra={"event": "worker_failed"})
                self.failed.set()
                self._abort.set()

        return run

    def _current(self, delivery: Delivery) -> bool:
        with self._lock:
            return delivery.generation == self._generation

    def _parse_loop(self) -> None:
        """Gather messages into batches, parsing as they come.

        A batch goes to the committer as soon as it is idle (low latency when
        traffic is light); while it is busy, messages gather for up to
        batch_wait seconds or batch_max_readings readings (throughput).
        """
        while True:
            try:
                delivery: Delivery | None = self._incoming.get(timeout=0.1)
            except queue.Empty:
                if self._closing.is_set():
                    break
                continue
            deliveries: list[Delivery] = []
            readings = 0
            now = datetime.now(UTC)
            deadline = time.monotonic() + self.batch_wait
            while True:
                if delivery is not None and self._prepare(delivery, now):
                    deliveries.append(delivery)
                    readings += len(delivery.items)
                if readings >= self.batch_max_readings:
                    break
                try:
                    delivery = self._incoming.get_nowait()
                    continue
                except queue.Empty:
                    delivery = None
                if (
                    not self._busy.is_set()
                    or self._closing.is_set()
                    or time.monotonic() >= deadline
                ):
                    break
                try:
                    delivery = self._incoming.get(timeout=0.002)
                except queue.Empty:
                    delivery = None
            if deliveries:
                self._handoff(Batch(deliveries, readings))
            if self._abort.is_set():
                return
        self._handoff(None)

    def _handoff(self, batch: Batch | None) -> None:
        self._busy.set()
        while not self._abort.is_set():
            try:
                self._batches.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue

    def _prepare(self, d: Delivery, now: datetime) -> bool:
        """Parse one message. False when it needs no write (stale or foreign)."""
        if not self._current(d):
            self._finish(d, "acked")  # from a lost connection: the broker sends it again
            return False
        d.provider_id = provider_of(d.topic)
        if d.provider_id is None:
            # Only a hand-made broker account could publish here: nothing to record it under.
            log.warning("message on a topic without a provider id", extra={"event": "foreign"})
            self._finish(d, "foreign_topic")
            return False
        try:
            d.items = parse_message(d.payload, now)
        except ShapeError as e:
            d.items, d.malformed = [Refusal(None, INVALID_SCHEMA, str(e))], True
        except Exception:  # a bug must not stop ingestion for everyone
            log.exception("payload could not be parsed", extra={"event": "parse_error"})
            d.items = [Refusal(None, INVALID_SCHEMA, "payload could not be parsed")]
            d.malformed = True
        d.payload = b""  # keep only the parsed form in memory
        return True

    def _finish(self, d: Delivery, result: str) -> None:
        """Acknowledge a handled message, unless it came on a connection since lost."""
        if self._current(d):
            self.client.ack(d.mid, d.qos)
            MESSAGES.labels(result).inc()
        else:
            MESSAGES.labels("redelivery_pending").inc()
        INFLIGHT.dec()

    def _commit_loop(self) -> None:
        while True:
            try:
                batch = self._batches.get(timeout=0.1)
            except queue.Empty:
                if self._abort.is_set():
                    return
                continue
            if batch is None:
                return
            self._busy.set()
            outcomes = self._write(batch)
            if outcomes is None:
                return  # aborted: nothing acknowledged, the broker redelivers
            self._acknowledge(batch, outcomes)
            if self._batches.empty():
                self._busy.clear()

    def _write(self, batch: Batch) -> list[list[Outcome]] | None:
        """Commit a batch; per-delivery outcomes. Retries while storage is unavailable."""
        delay = self.backoff[0]
        while True:
            try:
                return self._write_once(batch.deliveries)
            except StorageUnavailable as e:
                log.warning(
                    "database unavailable; holding messages unacknowledged",
                    extra={
                        "event": "storage_unavailable",
                        "error": str(e),
                        "batch": batch.readings,
                    },
                )
            except StorageError as e:  # even recording a refusal failed: retry, never drop
                log.error(
                    "database error; holding messages unacknowledged",
                    extra={"event": "storage_error", "error": str(e), "batch": batch.readings},
                )
            if self._abort.wait(delay):
                return None
            delay = min(delay * 2, self.backoff[1])

    def _write_once(self, deliveries: list[Delivery]) -> list[list[Outcome]]:
        items = [(d.provider_id or "", p) for d in deliveries for p in d.items]
        try:
            flat = self.writer.write(items, TRANSPORT)
        except StorageUnavailable:
            raise
        except StorageError as e:
            if len(deliveries) == 1:
                return [self._refuse_unstorable(deliveries[0], e)]
            # One message the database rejects must not hold back the others.
            return [out for d in deliveries for out in self._write_once([d])]
        result: list[list[Outcome]] = []
        start = 0
        for d in deliveries:
            result.append(flat[start : start + len(d.items)])
            start += len(d.items)
        return result

    def _refuse_unstorable(self, d: Delivery, error: StorageError) -> list[Outcome]:
        log.error(
            "database refused a message; refusing its readings",
            extra={"event": "storage_error", "error": str(error), "provider_id": d.provider_id},
        )
        d.items = [Refusal(p.id, INVALID_SCHEMA, "could not be stored") for p in d.items]
        return self.writer.write([(d.provider_id or "", p) for p in d.items], TRANSPORT)

    def _acknowledge(self, batch: Batch, outcomes: list[list[Outcome]]) -> None:
        for d, outs in zip(batch.deliveries, outcomes, strict=True):
            topic = f"vitals/v1/{d.provider_id}/rejections"
            for o in outs:
                if o.status == "rejected":
                    self._publish(topic, refusal_message(o))
            self._finish(d, "malformed" if d.malformed else "acked")
            d.items = []

    def _publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        REJECTIONS_PUBLISHED.inc()
        pending = self._pending_publishes
        pending.append(info)
        if len(pending) > 1000:
            pending[:] = [i for i in pending if not i.is_published()]

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY
        props.ReceiveMaximum = self._receive_maximum
        self.client.connect_async(
            self._host, self._port, keepalive=30, clean_start=False, properties=props
        )
        self.client.loop_start()
        for t in self._threads:
            t.start()

    def stop(self) -> bool:
        """Drain: take nothing new, commit and acknowledge what is held, disconnect.

        Returns False when the database stayed unavailable for drain_timeout
        (then what was held is left unacknowledged for redelivery).
        """
        with self._lock:
            self._accepting = False
        self._closing.set()
        deadline = time.monotonic() + self.drain_timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        drained = not any(t.is_alive() for t in self._threads) and not self.failed.is_set()
        if not drained:
            self._abort.set()
            for t in self._threads:
                t.join(5.0)
        # Let our refusals reach the broker before we go.
        wait_until = time.monotonic() + 5.0
        for info in self._pending_publishes:
            left = wait_until - time.monotonic()
            if left <= 0 or not self.connected.is_set():
                break
            if not info.is_published():
                try:
                    info.wait_for_publish(left)
                except (RuntimeError, ValueError):
                    break
        # The network thread sends the queued PUBACKs, then the DISCONNECT; stopping
        # it before that closed the socket with acknowledgements still queued, and
        # the broker redelivered committed messages.
        if self.client.disconnect() == mqtt.MQTT_ERR_SUCCESS:
            self._gone.wait(5.0)
        self.client.loop_stop()
        CONNECTED.set(0)
        return drained


def run(
    mqtt_url: str,
    writer: Writer,
    stop: threading.Event,
    *,
    instance: str = "0",
    receive_maximum: int = RECEIVE_MAXIMUM,
) -> int:
    """Run until `stop` is set (SIGTERM/SIGINT), then drain. Exit code for the CLI."""
    ingester = Ingester(mqtt_url, writer, instance=instance, receive_maximum=receive_maximum)
    ingester.start()
    log.info("ingester started", extra={"event": "started", "host": ingester._host})
    while not stop.wait(0.5):
        if ingester.failed.is_set():
            break
    drained = ingester.stop()
    if ingester.failed.is_set():
        log.error("ingester stopped by an internal error", extra={"event": "failed"})
        return 1
    if not drained:
        log.error(
            "database unavailable while draining: unacknowledged messages stay with the broker",
            extra={"event": "drain_incomplete"},
        )
        return 1
    log.info("ingester drained and stopped", extra={"event": "stopped"})
    return 0


def serve(
    settings: Settings,
    *,
    instance: str = "0",
    metrics_port: int | None = None,
    receive_maximum: int = RECEIVE_MAXIMUM,
) -> int:
    """`vitals mqtt`: JSON logs, metrics, the ingester until SIGTERM/SIGINT (which drain)."""
    from ingest import logs

    logs.configure()
    mqtt_url = settings.require_mqtt_url()
    try:
        parse_mqtt_url(mqtt_url)
    except ValueError as e:
        raise SettingsError(f"VITALS_MQTT_URL: {e}") from None
    pool = make_pool(
        settings.require_database_url(),
        min_size=1,
        max_size=2,
        timeout=5.0,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _n, _f: stop.set())
    if metrics_port is not None:
        start_http_server(metrics_port)
    try:
        return run(
            mqtt_url,
            Writer(pool),
            stop,
            instance=instance,
            receive_maximum=receive_maximum,
        )
    finally:
        pool.close()
