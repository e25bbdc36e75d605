"""Prometheus metrics shared by every transport (one registry per process)."""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Iterable

from prometheus_client import Counter, Histogram

READINGS = Counter(
    "vitals_readings_total",
    "Readings by outcome",
    ["transport", "status", "reason"],
)
BATCH_SIZE = Histogram(
    "vitals_batch_readings",
    "Readings per committed batch",
    ["transport"],
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
COMMIT_SECONDS = Histogram(
    "vitals_commit_seconds",
    "Time to write and commit one batch",
    ["transport"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STORAGE_ERRORS = Counter(
    "vitals_storage_errors_total", "Batches that failed to commit", ["transport", "kind"]
)


def record_batch(
    transport: str, seconds: float, outcomes: Iterable[tuple[str, str | None]]
) -> None:
    tally = _Tally(outcomes)
    total = 0
    for (status, reason), n in tally.items():
        READINGS.labels(transport, status, reason or "").inc(n)
        total += n
    BATCH_SIZE.labels(transport).observe(total)
    COMMIT_SECONDS.labels(transport).observe(seconds)
