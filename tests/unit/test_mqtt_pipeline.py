"""The ingester's pipeline on a fake writer and fake acknowledgements (no broker,
no database): two committers write at once, yet every message is acknowledged
once, after its commit, in the order it arrived."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence

import orjson

from ingest.gate import Gate
from ingest.mqtt.acks import Delivery
from ingest.mqtt.pipeline import Pipeline
from store.writer import Outcome, Parsed
from tests.support.seed import data_point

PROVIDER = str(uuid.uuid4())
TOPIC = f"vitals/v1/{PROVIDER}/readings"


class SlowFirstWriter:
    """Accepts everything; the first batch takes `delay` seconds, so the second
    one commits first. Records which batches were in flight together."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.committed: list[str] = []  # reading ids, in commit order
        self._lock = threading.Lock()

    def write(self, items: Sequence[tuple[str, Parsed]], transport: str) -> list[Outcome]:
        with self._lock:
            self.calls += 1
            first = self.calls == 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.delay if first else 0.01)
        with self._lock:
            self.in_flight -= 1
            self.committed.extend(str(p.id) for _, p in items)
        return [Outcome(p.id, "accepted") for _, p in items]


class RecordingAcks:
    """Acks' interface for the pipeline: every delivery is current; answers are recorded."""

    def __init__(self, writer: SlowFirstWriter) -> None:
        self.writer = writer
        self.answered: list[int] = []
        self.committed_when_answered: list[bool] = []

    def current(self, d: Delivery) -> bool:
        return True

    def answer(self, d: Delivery, outcomes: list[Outcome]) -> None:
        ids = {o.id for o in outcomes}
        self.committed_when_answered.append(ids <= set(self.writer.committed))
        self.answered.append(d.mid)

    def finish(self, d: Delivery, result: str) -> None:
        raise AssertionError(f"message {d.mid} finished without a commit ({result})")


def _delivery(mid: int) -> Delivery:
    payload = orjson.dumps(data_point("alice", id=f"m{mid}"))
    return Delivery(mid, 1, TOPIC, payload, generation=0, size=len(payload))


def test_two_committers_overlap_and_acknowledge_in_arrival_order() -> None:
    writer = SlowFirstWriter(delay=0.5)
    acks = RecordingAcks(writer)
    pipeline = Pipeline(
        Gate(writer, "mqtt"),
        acks,  # type: ignore[arg-type]
        batch_max_readings=1,  # one message per batch
        batch_wait=0.0,
        committers=2,
    )
    pipeline.start()
    try:
        for mid in range(1, 7):
            pipeline.enqueue(_delivery(mid))
        deadline = time.monotonic() + 10
        while len(acks.answered) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        assert pipeline.drain(10)
    assert acks.answered == [1, 2, 3, 4, 5, 6]
    assert all(acks.committed_when_answered)
    assert writer.most_in_flight == 2
    assert writer.committed[0] != "m1"  # the first batch committed after a later one


def test_one_committer_still_works() -> None:
    writer = SlowFirstWriter(delay=0.05)
    acks = RecordingAcks(writer)
    pipeline = Pipeline(Gate(writer, "mqtt"), acks, committers=1)  # type: ignore[arg-type]
    pipeline.start()
    try:
        for mid in range(1, 4):
            pipeline.enqueue(_delivery(mid))
        deadline = time.monotonic() + 10
        while len(acks.answered) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        assert pipeline.drain(10)
    assert acks.answered == [1, 2, 3]
    assert writer.most_in_flight == 1
