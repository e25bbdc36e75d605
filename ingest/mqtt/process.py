"""`vitals mqtt`: the ingester as a process, from Settings to exit code.

JSON logs, an instance id (given, or claimed: ingest.mqtt.instance), the pool,
writer and gate, the metrics endpoint, then the ingester until SIGTERM/SIGINT,
which drain: take nothing new, commit and acknowledge what is held, exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from prometheus_client import start_http_server

from bootstrap import build_services
from core.errors import SettingsError
from core.settings import Settings
from ingest.broker.config import parse_mqtt_url
from ingest.gate import Gate
from ingest.mqtt.ingester import (
    MAX_INFLIGHT_BYTES,
    RECEIVE_MAXIMUM,
    SESSION_EXPIRY,
    Ingester,
)
from ingest.mqtt.instance import InstanceSlotsFull, claim_instance
from ingest.mqtt.pipeline import COMMITTERS

log = logging.getLogger("vitals.mqtt")

TRANSPORT = "mqtt"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ITEMS = 5000  # data points per message, as for one HTTP request


def run(
    mqtt_url: str,
    gate: Gate,
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
        gate,
        instance=instance,
        receive_maximum=receive_maximum,
        max_inflight_bytes=max_inflight_bytes,
        session_expiry=session_expiry,
    )
    ingester.start()
    log.info("ingester started", extra={"event": "started", "host": ingester.host})
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
    locked in VITALS_MQTT_INSTANCE_DIR (see ingest.mqtt.instance).
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
        # The gate as MQTT uses it: Open mHealth, at most 256 KiB and 5,000
        # data points per message, written in the pipeline's thread.
        services = build_services(
            settings,
            TRANSPORT,
            pool_min=1,
            pool_max=COMMITTERS,  # one connection per committer
            pool_timeout=5.0,
            max_items=MAX_ITEMS,
            max_bytes=MAX_PAYLOAD_BYTES,
        )
        stack.callback(services.close)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _n, _f: stop.set())
        if metrics_port is not None:
            start_http_server(metrics_port)
        return run(
            mqtt_url,
            services.gate,
            stop,
            instance=instance,
            receive_maximum=receive_maximum,
            max_inflight_bytes=max_inflight_bytes or settings.mqtt_max_inflight_bytes,
            session_expiry=(
                settings.mqtt_session_expiry if session_expiry is None else session_expiry
            ),
        )
