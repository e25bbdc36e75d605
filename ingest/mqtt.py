"""`vitals mqtt`: the MQTT ingester.

    broker ──$share/vitals/vitals/v1/+/readings──▶ on_message (enqueue only)
          ──▶ parser thread (decode, gate.parse_payload, batch across messages)
          ──▶ committer thread (Writer.write: one transaction) ──▶ publish refusals, PUBACK

A message is acknowledged only after every reading in it is committed or
refused-and-recorded, so a crash loses nothing (the broker redelivers the
session's unacknowledged messages) and a redelivery stores nothing twice (the
writer's dedup). The provider is the topic's, which the broker's ACL pins to
the publishing account; the payload is never trusted for it.

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
by the replicas), so a restarted or recreated instance resumes its queue. The
session expiry (`--session-expiry`, default 300 s) bounds how long the broker
keeps a vanished instance's session: Mosquitto 2.0 keeps giving an offline
member of a shared subscription its share, so an instance that never comes
back holds readings (PUBACKed to devices, outside consent and erasure) for at
most that long, after which the broker discards them with the session.

Mosquitto 2.0.11 does not restore shared subscriptions from its persistence
store: after a broker restart, until an ingester has reconnected (it
resubscribes in on_connect), the broker answers a device's publish with PUBACK
0x10 "No matching subscribers" and delivers it to no one. Devices must treat
0x10 as "not delivered" and send again (tests/integration/test_mqtt_faults.py).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import signal
import socket
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
from prometheus_client import start_http_server

from core import metrics
from core.errors import SettingsError, StorageError, StorageUnavailable
from core.settings import Settings
from ingest.broker import SHARE_GROUP, ingester_client_id, parse_mqtt_url
from ingest.gate.payload import ShapeError, parse_payload
from ingest.mqtt_instance import InstanceSlotsFull, claim_instance
from schemas.reading import INVALID_SCHEMA, Refusal
from store.db import make_pool
from store.writer import Outcome, Parsed, Writer

log = logging.getLogger("vitals.mqtt")

TRANSPORT = "mqtt"
SUBSCRIPTION = f"$share/{SHARE_GROUP}/vitals/v1/+/readings"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ITEMS = 5000  # data points per message, as for one HTTP request
SESSION_EXPIRY = 300  # seconds the broker keeps our session (and its share) while we are away
RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may send us
MAX_INFLIGHT_BYTES = 64 * 1024 * 1024  # payload bytes received and not yet acknowledged


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
    size: int = 0  # payload bytes, counted against max_inflight_bytes until acknowledged
    provider_id: str | None = None
    malformed: bool = False
    items: list[Parsed] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    deliveries: list[Delivery]
    readings: int


def refusal_message(outcome: Outcome) -> bytes:
    return orjson.dumps({"id": outcome.id, "reason": outcome.reason, "detail": outcome.detail})


class _ByteLimitedClient(mqtt.Client):
    """A paho client whose network thread stops reading while `paused()` says so.

    paho (pinned at 2.2 in uv.lock) reads in `loop_read`, called by its network
    thread when the socket is readable; this one reads packet by packet and
    stops as soon as the in-flight bytes are full, so at most one message
    overshoots. While paused it waits briefly instead of reading, and the loop
    goes on writing (PUBACKs, refusals, pings). It still reads until connected,
    so that a CONNACK is never left unread.

    After its own DISCONNECT it closes the connection gracefully (`_sock_close`).
    """

    paused: Callable[[float], bool] = staticmethod(lambda _wait: False)
    close_timeout = 5.0  # seconds to wait for the broker to read our DISCONNECT
    _disconnecting = False

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        if self._sock is None:
            return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
        count = max(len(self._out_messages) + len(self._in_messages), 1)
        for _ in range(count):
            if self.is_connected() and self.paused(0.05):
                metrics.MQTT_PAUSED.set(1)
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            metrics.MQTT_PAUSED.set(0)
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN:
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def disconnect(
        self, reasoncode: ReasonCode | None = None, properties: Properties | None = None
    ) -> mqtt.MQTTErrorCode:
        self._disconnecting = True
        return super().disconnect(reasoncode, properties)

    def _sock_close(self) -> None:
        """Close the socket; after our DISCONNECT, only once the broker has read it.

        paho closes the socket as soon as the DISCONNECT is written. The broker
        keeps sending PUBLISHes until it reads that DISCONNECT, so the socket
        often has unread data then, and Linux answers close() of such a socket
        with a RST instead of a FIN. A busy Mosquitto, woken by the reset, drops
        the connection ("closed its connection") without processing what it had
        received and not yet read: our last PUBACKs and the DISCONNECT. The
        session then redelivered messages we had committed and acknowledged.
        So: half-close (FIN after everything we wrote), read and discard until
        the broker closes its side (it has then processed all of it), then
        close. What we discard is unacknowledged and will be redelivered.
        """
        sock = self._sock
        if sock is not None and self._disconnecting:
            self._disconnecting = False
            _drain_and_close(sock, self.close_timeout)  # type: ignore[arg-type]
        super()._sock_close()


def _drain_and_close(sock: socket.socket, timeout: float) -> None:
    """Half-close `sock` and read until the peer closes too (or `timeout` passes)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return  # already reset or closed: nothing more to deliver
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            readable, _, _ = select.select([sock], [], [], left)
            if readable and not sock.recv(65536):
                return  # the broker closed its side: it has read our DISCONNECT
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return
    log.warning(
        "the broker did not close the connection after our DISCONNECT; closing anyway",
        extra={"event": "disconnect_timeout"},
    )


class Ingester:
    """Consume readings from the broker into the writer; see the module docstring."""

    def __init__(
        self,
        mqtt_url: str,
        writer: Writer,
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
        metrics.register_transport(TRANSPORT)
        self.writer = writer
        self.batch_max_readings = batch_max_readings
        self.batch_wait = batch_wait
        self.drain_timeout = drain_timeout
        self.backoff = backoff
        self._host, self._port, username, password = parse_mqtt_url(mqtt_url)
        self.client_id = ingester_client_id(mqtt_url, instance)
        self._receive_maximum = receive_maximum
        self._session_expiry = session_expiry
        self.max_inflight_bytes = max_inflight_bytes
        self._held_bytes = 0  # under _space
        self._space = threading.Condition()

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

        self.client = _ByteLimitedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        self.client.paused = self._full
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
            metrics.MQTT_CONNECTED.set(1)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        with self._lock:
            self._generation += 1  # what we hold now will be redelivered: never ack it
        metrics.MQTT_CONNECTED.set(0)
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
                size = len(msg.payload)
                self._incoming.put(
                    Delivery(msg.mid, msg.qos, msg.topic, msg.payload, self._generation, size)
                )
            with self._space:
                self._held_bytes += size
                metrics.MQTT_INFLIGHT_BYTES.set(self._held_bytes)
            metrics.MQTT_INFLIGHT.inc()
        except Exception:  # never let a callback break paho's loop
            log.exception("could not enqueue a message", extra={"event": "enqueue_error"})

    def _full(self, wait: float) -> bool:
        """True while the in-flight bytes are at the limit (waiting up to `wait` s for space)."""
        with self._space:
            if self._held_bytes >= self.max_inflight_bytes:
                self._space.wait(wait)
            return self._held_bytes >= self.max_inflight_bytes

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
            metrics.MQTT_MESSAGES.labels(result).inc()
        else:
            metrics.MQTT_MESSAGES.labels("redelivery_pending").inc()
        metrics.MQTT_INFLIGHT.dec()
        with self._space:
            self._held_bytes -= d.size
            metrics.MQTT_INFLIGHT_BYTES.set(self._held_bytes)
            self._space.notify_all()

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
        metrics.MQTT_REJECTIONS_PUBLISHED.inc()
        pending = self._pending_publishes
        pending.append(info)
        if len(pending) > 1000:
            pending[:] = [i for i in pending if not i.is_published()]

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry
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
        # The network thread sends the queued PUBACKs, then the DISCONNECT, and
        # closes only once the broker has read them (_ByteLimitedClient._sock_close);
        # stopping it before that closed the socket with acknowledgements still
        # queued or unread, and the broker redelivered committed messages.
        if self.client.disconnect() == mqtt.MQTT_ERR_SUCCESS:
            self._gone.wait(5.0)
        self.client.loop_stop()
        metrics.MQTT_CONNECTED.set(0)
        return drained


def run(
    mqtt_url: str,
    writer: Writer,
    stop: threading.Event,
    *,
    instance: str = "0",
    receive_maximum: int = RECEIVE_MAXIMUM,
    max_inflight_bytes: int = MAX_INFLIGHT_BYTES,
    session_expiry: int = SESSION_EXPIRY,
) -> int:
    """Run until `stop` is set (SIGTERM/SIGINT), then drain. Exit code for the CLI."""
    ingester = Ingester(
        mqtt_url,
        writer,
        instance=instance,
        receive_maximum=receive_maximum,
        max_inflight_bytes=max_inflight_bytes,
        session_expiry=session_expiry,
    )
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
    instance: str | None = None,
    metrics_port: int | None = None,
    receive_maximum: int = RECEIVE_MAXIMUM,
    max_inflight_bytes: int | None = None,
    session_expiry: int | None = None,
) -> int:
    """`vitals mqtt`: JSON logs, metrics, the ingester until SIGTERM/SIGINT (which drain).

    `instance` (else VITALS_MQTT_INSTANCE) may be `auto`: the lowest free number
    locked in VITALS_MQTT_INSTANCE_DIR (see ingest.mqtt_instance).
    """
    from core import logs

    logs.configure()
    mqtt_url = settings.require_mqtt_url()
    try:
        parse_mqtt_url(mqtt_url)
    except ValueError as e:
        raise SettingsError(f"VITALS_MQTT_URL: {e}") from None
    instance = instance or settings.mqtt_instance
    with contextlib.ExitStack() as stack:
        if instance == "auto":
            if settings.mqtt_instance_dir is None:
                raise SettingsError("--instance auto needs VITALS_MQTT_INSTANCE_DIR")
            try:
                instance, lock = claim_instance(settings.mqtt_instance_dir)
            except InstanceSlotsFull as e:
                raise SettingsError(str(e)) from None
            stack.enter_context(lock)
        log.info("instance", extra={"event": "instance", "instance": instance})
        pool = make_pool(
            settings.require_database_url(),
            min_size=1,
            max_size=2,
            timeout=5.0,
        )
        stack.callback(pool.close)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _n, _f: stop.set())
        if metrics_port is not None:
            start_http_server(metrics_port)
        return run(
            mqtt_url,
            Writer(pool),
            stop,
            instance=instance,
            receive_maximum=receive_maximum,
            max_inflight_bytes=max_inflight_bytes or settings.mqtt_max_inflight_bytes,
            session_expiry=(
                settings.mqtt_session_expiry if session_expiry is None else session_expiry
            ),
        )
