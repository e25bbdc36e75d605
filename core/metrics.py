"""Every Prometheus metric of vitals, declared here once (one registry per process).

The shared ones (readings, batches, commits, storage errors) are registered on
import, as before. A transport's own metrics are registered by that transport
when it starts (`register_transport("http" | "mqtt")`), so the API's /metrics
shows no MQTT gauges and the ingester's none of the HTTP latency.
"""

from __future__ import annotations

import os
import threading
from collections import Counter as _Tally
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.metrics import MetricWrapperBase

# Set (to a private directory) by `vitals serve --workers N` before its workers
# start: prometheus_client then keeps every worker's values in files there.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

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

# HTTP transport (registered by the app factory).
HTTP_REQUEST_SECONDS = Histogram(
    "vitals_http_request_seconds",
    "HTTP request latency by route template and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=None,
)

# MQTT ingester (registered by the ingester).
MQTT_MESSAGES = Counter(
    "vitals_mqtt_messages_total",
    "MQTT messages by what became of them",
    ["result"],  # acked | malformed | foreign_topic | redelivery_pending (connection lost)
    registry=None,
)
MQTT_INFLIGHT = Gauge(
    "vitals_mqtt_inflight_messages", "Messages received and not yet acknowledged", registry=None
)
MQTT_INFLIGHT_BYTES = Gauge(
    "vitals_mqtt_inflight_bytes", "Payload bytes received and not yet acknowledged", registry=None
)
MQTT_PAUSED = Gauge(
    "vitals_mqtt_reading_paused",
    "1 while the ingester stops reading (in-flight bytes full)",
    registry=None,
)
MQTT_CONNECTED = Gauge(
    "vitals_mqtt_connected", "1 while connected and subscribed to readings", registry=None
)
MQTT_REJECTIONS_PUBLISHED = Counter(
    "vitals_mqtt_rejections_published_total",
    "Refusals published on rejections topics",
    registry=None,
)

_TRANSPORT_METRICS: dict[str, tuple[MetricWrapperBase, ...]] = {
    "http": (HTTP_REQUEST_SECONDS,),
    "mqtt": (
        MQTT_MESSAGES,
        MQTT_INFLIGHT,
        MQTT_INFLIGHT_BYTES,
        MQTT_PAUSED,
        MQTT_CONNECTED,
        MQTT_REJECTIONS_PUBLISHED,
    ),
}
_registered: set[str] = set()
_register_lock = threading.Lock()


def register_transport(transport: str) -> None:
    """Expose one transport's own metrics in the process registry (idempotent)."""
    with _register_lock:
        if transport in _registered:
            return
        for metric in _TRANSPORT_METRICS[transport]:
            REGISTRY.register(metric)
        _registered.add(transport)


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


def exposition() -> bytes:
    """The Prometheus text of this process's metrics; with several worker
    processes (MULTIPROC_DIR_ENV set), of all of them added up."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return _generate_latest(registry)
    return _generate_latest()
