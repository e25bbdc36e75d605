"""`vitals serve`: the app under uvicorn, with TLS and a separate admin
listener when asked, draining on SIGINT/SIGTERM; one process, or `workers`
processes on the same listening sockets."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from core import logs
from core.metrics import MULTIPROC_DIR_ENV
from core.settings import Settings
from ingest.http.app import create_app

log = logging.getLogger("vitals.http")


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    admin_host: str = "127.0.0.1",
    admin_port: int | None = None,
    workers: int = 1,
) -> None:
    """`vitals serve`: JSON logs, then uvicorn until SIGINT/SIGTERM.

    With `ssl_certfile`/`ssl_keyfile`, every listener speaks TLS only. With
    `admin_port`, a second listener on `admin_host:admin_port` serves the admin
    API, /docs and /metrics, and the public one (`host:port`) only the webhook
    and health checks.

    A signal stops accepting connections, lets in-flight requests finish, and
    drains the coalescing writer (every answered request is committed); the
    process then exits 0.

    With `workers` > 1, the sockets are bound here and that many worker
    processes (uvicorn's supervisor, which restarts one that dies) each run the
    app with its own pool and coalescing writer: more Python runs in parallel
    (on 2 cores one process holds its GIL about half the time under load). A
    signal reaches every worker, and each drains as above. /metrics then adds
    up the workers' counters (Prometheus' multiprocess mode, in a private
    temporary directory removed at exit).
    """
    if workers < 1:
        raise ValueError("at least one worker")
    # Refuses a placeholder key or token before binding a port.
    app = create_app(settings, admin_port=admin_port)
    logs.configure()
    tls = {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile} if ssl_certfile else {}
    options: dict[str, Any] = {"log_config": None, "access_log": False, **tls}
    config = uvicorn.Config(app, host=host, port=port, **options)
    sockets = [config.bind_socket()]
    log.info("serving", extra={"event": "serve", "host": host, "port": port, "workers": workers})
    if admin_port is not None:
        admin = uvicorn.Config(app, host=admin_host, port=admin_port, log_config=None)
        sockets.append(admin.bind_socket())
        log.info(
            "serving admin",
            extra={"event": "serve_admin", "host": admin_host, "port": admin_port},
        )
    if workers == 1:
        _Server(config).run(sockets=sockets)
        return
    metrics_dir = tempfile.mkdtemp(prefix="vitals-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = metrics_dir  # read by each worker's prometheus_client
    try:
        factory = functools.partial(_worker_app, settings, admin_port)
        multi = uvicorn.Config(factory, factory=True, workers=workers, **options)
        Multiprocess(multi, sockets=sockets).run()
    finally:
        os.environ.pop(MULTIPROC_DIR_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        for sock in sockets:
            sock.close()
    log.info("stopped", extra={"event": "serve_stopped", "workers": workers})


def _worker_app(settings: Settings, admin_port: int | None) -> FastAPI:
    """A worker process's app (uvicorn calls this in the new process)."""
    logs.configure()
    return create_app(settings, admin_port=admin_port)


class _Server(uvicorn.Server):
    """uvicorn.Server that exits normally after a signal instead of re-raising it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
