"""`vitals serve`: the app under uvicorn, with TLS and a separate admin
listener when asked, draining on SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import uvicorn

from core import logs
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
) -> None:
    """`vitals serve`: JSON logs, then uvicorn until SIGINT/SIGTERM.

    With `ssl_certfile`/`ssl_keyfile`, every listener speaks TLS only. With
    `admin_port`, a second listener on `admin_host:admin_port` serves the admin
    API, /docs and /metrics, and the public one (`host:port`) only the webhook
    and health checks.

    A signal stops accepting connections, lets in-flight requests finish, and
    drains the coalescing writer (every answered request is committed); the
    process then exits 0.
    """
    # Refuses a placeholder key or token before binding a port.
    app = create_app(settings, admin_port=admin_port)
    logs.configure()
    tls = {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile} if ssl_certfile else {}
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, **tls)  # type: ignore[arg-type]
    if admin_port is None:
        log.info("serving", extra={"event": "serve", "host": host, "port": port})
        _Server(config).run()
        return
    public = config.bind_socket()
    admin = uvicorn.Config(app, host=admin_host, port=admin_port, log_config=None).bind_socket()
    log.info("serving", extra={"event": "serve", "host": host, "port": port})
    log.info(
        "serving admin", extra={"event": "serve_admin", "host": admin_host, "port": admin_port}
    )
    _Server(config).run(sockets=[public, admin])


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
