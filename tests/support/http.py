"""The HTTP app for tests (a pytest plugin): a real uvicorn server in a thread,
a TCP proxy that can cut the app off from PostgreSQL, signed requests, seed data.

    with running_app(db_url) as api:
        api.post_readings(world, [point])      # signed with the provider's secret

Fixtures for modules whose tests are isolated by provider and share one
database and one server (each fresh database costs ~1 s to create and drop):
`shared_url` and `shared_api` (module scope) and `shared_conn` (a connection
to that database, per test).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import psycopg
import psycopg_pool
import pytest
import uvicorn

from core.settings import Settings
from ingest.http.app import create_app
from ingest.http.signatures import sign
from store.db import make_pool
from tests.support import seed
from tests.support.net import free_port
from tests.support.pg import TEST_SECRET_KEY, scratch_database

ADMIN_TOKEN = "bootstrap-admin-token-8c1f0e2d9b7a6354"


@dataclass
class World:
    """One provider with one linked subject holding collection (+location) consent."""

    provider_id: str
    secret: str
    user_ref: str
    subject_id: str


def make_world(
    conn: psycopg.Connection,
    master: bytes,
    types: tuple[str, ...] | None = None,
    consent_types: list[str] | None = None,
    location: bool = True,
    user_ref: str | None = None,
) -> World:
    p = seed.provider(conn, master, types) if types else seed.provider(conn, master)
    ref = user_ref or f"user-{uuid.uuid4().hex[:8]}"
    sid = seed.subject(conn, p["provider_id"], ref)
    seed.consent(conn, sid, "collection", types=consent_types)
    if location:
        seed.consent(conn, sid, "location")
    return World(p["provider_id"], p["webhook_secret"], ref, sid)


@dataclass
class Api:
    base_url: str
    client: httpx.Client
    pool: psycopg_pool.ConnectionPool
    app: Any
    extra: dict[str, Any] = field(default_factory=dict)

    def post_readings(
        self,
        world: World,
        payload: Any,
        *,
        content_type: str = "application/json",
        t: int | None = None,
        secret: str | None = None,
        body: bytes | None = None,
    ) -> httpx.Response:
        raw = body if body is not None else orjson.dumps(payload)
        return self.client.post(
            f"/v1/providers/{world.provider_id}/readings",
            content=raw,
            headers={
                "Content-Type": content_type,
                "Vitals-Signature": sign(secret or world.secret, raw, t),
            },
        )

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


class ServerThread:
    """A real uvicorn server for `app` on a free port, in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            ws="none",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def settings_for(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "secret_key": TEST_SECRET_KEY,
        "admin_token": ADMIN_TOKEN,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.contextmanager
def running_app(db_url: str, *, pool_timeout: float = 2.0, **overrides: Any) -> Iterator[Api]:
    """create_app on a real pool, served by uvicorn; yields a client bound to it."""
    pool = make_pool(db_url, min_size=1, max_size=4, timeout=pool_timeout)
    try:
        app = create_app(settings_for(db_url, **overrides), pool=pool)
        with ServerThread(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            yield Api(base_url, client, pool, app)
    finally:
        pool.close()


class TcpProxy:
    """Forwards 127.0.0.1:port to a PostgreSQL server; `stop()` cuts every connection.

    A real network outage between the app and its database, without touching
    the shared server: stop, observe, start again on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def via_proxy(db_url: str, port: int) -> str:
    return psycopg.conninfo.make_conninfo(db_url, host="127.0.0.1", port=str(port))


def count(conn: psycopg.Connection, table: str, where: str = "true", params: Any = None) -> int:
    conn.rollback()
    row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def shared_url(pg_server_url: str, template_db: str) -> Iterator[str]:
    """One migrated database for the module: its tests are isolated by provider."""
    with scratch_database(pg_server_url, "vitals_http", template=template_db) as url:
        yield url


@pytest.fixture(scope="module")
def shared_api(shared_url: str) -> Iterator[Api]:
    """One server on `shared_url` for the module."""
    with running_app(shared_url) as a:
        yield a


@pytest.fixture
def shared_conn(shared_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(shared_url) as c:
        yield c
