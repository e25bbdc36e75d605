"""The ingester's pipeline: received messages → the gate → acknowledgements.

    on_message ──▶ parser thread (provider from the topic, Gate.parse_or_refuse,
                   batch across messages)
               ──▶ committer threads (Gate.write: one transaction per batch, each
                   on its own connection; two by default)
               ──▶ Acks.answer, in the order the batches were made: publish
                   refusals, PUBACK

Two committers overlap one batch's statements with the next one's (on 2 cores
the database's share of a batch is most of its cost, and one transaction at
a time leaves a core idle while Python formats the next). Each batch is
decided in its own transaction, so a withdrawal committed first still wins;
a reading in two batches at once is stored once (the writer's unique key and
retry). Acknowledgements stay in order: a batch committed early waits for
the ones before it (MQTT wants PUBACKs in the order the PUBLISHes came).

While the database is unavailable a committer retries with backoff and holds
its batch unacknowledged (memory stays bounded by the receive maximum and
max_inflight_bytes). `drain()` takes nothing new and finishes what is held.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import StorageError, StorageUnavailable
from ingest.gate import Gate
from ingest.mqtt.acks import Acks, Delivery
from ingest.mqtt.topics import provider_of
from store.writer import Outcome

log = logging.getLogger("vitals.mqtt")


COMMITTERS = 2  # batches committed at once (each holds one pool connection)


@dataclass(slots=True)
class Batch:
    deliveries: list[Delivery]
    readings: int
    seq: int = 0  # acknowledged after every batch with a lower seq


class Pipeline:
    """A parser thread and `committers` committer threads between paho and the database."""

    def __init__(
        self,
        gate: Gate,
        acks: Acks,
        *,
        batch_max_readings: int = 5000,
        batch_wait: float = 0.05,
        backoff: tuple[float, float] = (0.1, 5.0),
        committers: int = COMMITTERS,
    ) -> None:
        if committers < 1:
            raise ValueError("at least one committer")
        self.gate = gate
        self.acks = acks
        self.batch_max_readings = batch_max_readings
        self.batch_wait = batch_wait
        self.backoff = backoff
        self._incoming: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self.committers = committers
        self._batches: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self.closing = threading.Event()  # SIGTERM: take nothing new, finish what we hold
        self._abort = threading.Event()  # give up draining (database still down)
        self.failed = threading.Event()  # a worker died of a bug
        self._working = 0  # committers holding a batch (guarded by _turn)
        self._next_seq = 0  # the parser's next batch number
        self._next_ack = 0  # the batch whose turn it is to be acknowledged (guarded by _turn)
        self._turn = threading.Condition()
        self._threads = [
            threading.Thread(target=self._guard(self._parse_loop), name="mqtt-parse"),
            *(
                threading.Thread(target=self._guard(self._commit_loop), name=f"mqtt-commit-{i}")
                for i in range(committers)
            ),
        ]

    def enqueue(self, delivery: Delivery) -> None:
        """Hand over a received message (paho's network thread; never blocks)."""
        self._incoming.put(delivery)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def drain(self, timeout: float) -> bool:
        """Take nothing new; commit and acknowledge what is held, within `timeout`.

        Returns False when that failed (the database stayed unavailable, or a
        worker died): then what was held is left unacknowledged for redelivery.
        """
        self.closing.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        drained = not any(t.is_alive() for t in self._threads) and not self.failed.is_set()
        if not drained:
            self._abort.set()
            for t in self._threads:
                t.join(5.0)
        return drained

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

    def _parse_loop(self) -> None:
        """Gather messages into batches, parsing as they come.

        A batch goes to a committer as soon as one is idle (low latency when
        traffic is light); while all are busy, messages gather for up to
        batch_wait seconds or batch_max_readings readings (throughput).
        """
        while True:
            try:
                delivery: Delivery | None = self._incoming.get(timeout=0.1)
            except queue.Empty:
                if self.closing.is_set():
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
                if not self._saturated() or self.closing.is_set() or time.monotonic() >= deadline:
                    break
                try:
                    delivery = self._incoming.get(timeout=0.002)
                except queue.Empty:
                    delivery = None
            if deliveries:
                self._handoff(Batch(deliveries, readings, self._next_seq))
                self._next_seq += 1
            if self._abort.is_set():
                return
        for _ in range(self.committers):
            self._handoff(None)

    def _saturated(self) -> bool:
        """Every committer holds a batch, or one is already waiting for them."""
        with self._turn:
            return self._working >= self.committers or not self._batches.empty()

    def _handoff(self, batch: Batch | None) -> None:
        while not self._abort.is_set():
            try:
                self._batches.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue

    def _prepare(self, d: Delivery, now: datetime) -> bool:
        """Parse one message. False when it needs no write (stale or foreign)."""
        if not self.acks.current(d):
            self.acks.finish(d, "acked")  # from a lost connection: the broker sends it again
            return False
        d.provider_id = provider_of(d.topic)
        if d.provider_id is None:
            # Only a hand-made broker account could publish here: nothing to record it under.
            log.warning("message on a topic without a provider id", extra={"event": "foreign"})
            self.acks.finish(d, "foreign_topic")
            return False
        d.items, d.malformed = self.gate.parse_or_refuse(d.payload, "omh", now=now)
        d.payload = b""  # keep only the parsed form in memory
        return True

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
            with self._turn:
                self._working += 1
            outcomes = self._write(batch)
            if outcomes is None or not self._await_turn(batch.seq):
                return  # aborted: nothing acknowledged, the broker redelivers
            for d, outs in zip(batch.deliveries, outcomes, strict=True):
                self.acks.answer(d, outs)
                d.items = []
            with self._turn:
                self._next_ack += 1
                self._working -= 1
                self._turn.notify_all()

    def _await_turn(self, seq: int) -> bool:
        """Wait until every earlier batch is acknowledged (False: aborted meanwhile)."""
        with self._turn:
            while self._next_ack != seq:
                if self._abort.is_set():
                    return False
                self._turn.wait(0.1)
        return True

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
            flat = self.gate.write(items)
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
        return self.gate.refuse([(d.provider_id or "", p) for p in d.items], "could not be stored")
