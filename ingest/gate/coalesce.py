"""A coalescing writer: concurrent requests share transactions.

Each request hands its parsed readings to `submit()` and gets a future that
resolves once *its* readings are committed (or raises the storage error that
stopped the commit). `committers` background threads (two by default, each on
its own pool connection) own the batches: an idle one takes every waiting
request up to `max_batch` readings, writes them in one transaction, and hands
each request its own slice of the outcomes. It flushes as soon as the queue is
empty or the batch is full, so a lone request waits for nothing but its own
commit, while a burst of small requests becomes a few large transactions. Two
committers overlap one transaction's Python work (rows, outcomes) with the
other's statements in PostgreSQL; the writer's transaction still decides
consent, and concurrent transactions are safe as the MQTT ingester's are.

A request is never split across transactions, so a failed commit leaves
nothing of it stored. The queue is bounded (in readings): when it is full,
`submit()` raises `Overloaded`, a `StorageUnavailable` (HTTP answers 503).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from core.errors import StorageError, StorageUnavailable
from store.writer import Outcome, Parsed, Writer

log = logging.getLogger("vitals.coalesce")

COMMITTERS = 2  # transactions in flight at once (each holds one pool connection)


class Overloaded(StorageUnavailable):
    """Too many readings are waiting for the database; try again shortly."""


class Closed(StorageUnavailable):
    """The writer is shutting down and takes no new work."""


@dataclass(slots=True)
class _Job:
    items: Sequence[tuple[str, Parsed]]
    future: Future[list[Outcome]] = field(default_factory=Future)


class CoalescingWriter:
    """Batches concurrent `submit()` calls into shared transactions (`committers` threads)."""

    def __init__(
        self,
        writer: Writer,
        transport: str,
        *,
        max_batch: int = 5000,
        max_pending: int = 50_000,
        committers: int = COMMITTERS,
    ) -> None:
        if committers < 1:
            raise ValueError("at least one committer")
        self.writer = writer
        self.transport = transport
        self.max_batch = max_batch
        self.max_pending = max(max_pending, max_batch)
        self._queue: deque[_Job] = deque()
        self._pending = 0  # readings queued, not yet taken by a committer
        self._cond = threading.Condition()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._run, name=f"coalesce-{transport}-{i}", daemon=True)
            for i in range(committers)
        ]
        for thread in self._threads:
            thread.start()

    # Producer side -----------------------------------------------------------

    def submit(self, items: Sequence[tuple[str, Parsed]]) -> Future[list[Outcome]]:
        """Queue one request's readings; the future resolves after their commit."""
        job = _Job(items)
        if not items:
            job.future.set_result([])
            return job.future
        with self._cond:
            if self._closing:
                raise Closed("the writer is shutting down")
            if self._pending + len(items) > self.max_pending:
                raise Overloaded(f"{self._pending} readings are already waiting to be stored")
            self._queue.append(job)
            self._pending += len(items)
            self._cond.notify()
        return job.future

    def write(
        self, items: Sequence[tuple[str, Parsed]], timeout: float | None = None
    ) -> list[Outcome]:
        """Blocking form of `submit()`."""
        return self.submit(items).result(timeout)

    @property
    def pending(self) -> int:
        return self._pending

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking work, finish what is queued, and stop the threads."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # Consumer side -----------------------------------------------------------

    def _take(self) -> list[_Job] | None:
        """Wait for work, then take whole jobs up to max_batch readings."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            jobs = [self._queue.popleft()]
            size = len(jobs[0].items)
            while self._queue and size + len(self._queue[0].items) <= self.max_batch:
                job = self._queue.popleft()
                jobs.append(job)
                size += len(job.items)
            self._pending -= size
            return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if live:
                self._flush(live)

    def _flush(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        items = [item for job in jobs for item in job.items]
        try:
            outcomes = self.writer.write(items, self.transport)
        except StorageUnavailable as e:
            for job in jobs:
                job.future.set_exception(e)
            log.warning(
                "batch not stored: storage unavailable",
                extra={"event": "batch_failed", "batch": len(items), "requests": len(jobs)},
            )
            return
        except StorageError as e:
            if len(jobs) > 1:
                # Something in one request broke the shared transaction: retry each
                # alone, so only the request that caused it sees the error.
                for job in jobs:
                    self._flush([job])
                return
            jobs[0].future.set_exception(e)
            log.warning("batch not stored", extra={"event": "batch_failed", "batch": len(items)})
            return
        except BaseException as e:  # never kill the thread; the caller sees the error
            for job in jobs:
                job.future.set_exception(e)
            log.exception("batch failed", extra={"event": "batch_failed", "batch": len(items)})
            return
        start = 0
        for job in jobs:
            end = start + len(job.items)
            job.future.set_result(outcomes[start:end])
            start = end
        log.debug(
            "batch committed",
            extra={
                "event": "batch_committed",
                "batch": len(items),
                "requests": len(jobs),
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
