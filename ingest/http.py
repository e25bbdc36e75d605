"""The HTTP transport: signed partner webhooks, health and metrics, the admin API.

Thin on purpose: authenticate, read the body within limits, decode, hand the
items to the gate (`parse_payload`) and the shared coalescing writer, answer.
No SQL and no consent logic here: the writer's transaction decides.

    app = create_app(Settings())        # refuses a placeholder VITALS_SECRET_KEY
    uvicorn.run(app)                    # or: vitals serve --port 8080
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
import psycopg_pool
import uvicorn
from fastapi import FastAPI, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from core import logs
from core.errors import StorageError, StorageUnavailable
from core.metrics import HTTP_REQUEST_SECONDS, register_transport
from core.settings import Settings
from ingest.coalesce import CoalescingWriter
from ingest.gate import Format, ShapeError, parse_payload
from ingest.webhook_auth import (
    PROVIDER_CACHE_TTL_S,
    SIGNATURE_HEADER,
    SIGNATURE_MISMATCH,
    ProviderCache,
    parse_signature,
)
from store.db import make_pool, translate_errors
from store.migrate import pending
from store.writer import Writer

log = logging.getLogger("vitals.http")

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_ITEMS = 5000
RETRY_AFTER_S = 5
TRANSPORT = "http"
INLINE_PARSE_ITEMS = 8  # smaller payloads are validated on the event loop (no thread hop)


# Application state -------------------------------------------------------------


@dataclass
class Runtime:
    """Everything a request needs; built by `create_app`, started by its lifespan."""

    settings: Settings
    master: bytes
    admin_token_hash: bytes | None
    demo: bool
    pool: psycopg_pool.ConnectionPool | None = None
    owns_pool: bool = False
    coalescer: CoalescingWriter | None = None
    providers: ProviderCache | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def require_pool(self) -> psycopg_pool.ConnectionPool:
        if self.pool is None:
            raise StorageUnavailable("the application has not started")
        return self.pool


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


# Responses -------------------------------------------------------------------


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": code, "detail": detail}, status, headers)


def unavailable(detail: str = "storage is unavailable; retry later") -> Response:
    return error(503, "unavailable", detail, {"Retry-After": str(RETRY_AFTER_S)})


class ItemResult(BaseModel):
    id: str | None
    status: str = Field(description="accepted | duplicate | rejected")
    reason: str | None = Field(
        None,
        description="invalid_schema, unsupported_type, implausible_value, unknown_subject, "
        "no_consent, type_not_approved or future_timestamp",
    )
    detail: str | None = None


class WebhookResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]


class ErrorBody(BaseModel):
    error: str
    detail: str


_EXAMPLE_POINT = {
    "header": {
        "id": "3f1c2b7a-0d7e-4a55-9f0e-1b2c3d4e5f60",
        "creation_date_time": "2026-01-15T08:30:00Z",
        "schema_id": {"namespace": "omh", "name": "heart-rate", "version": "2.0"},
        "acquisition_provenance": {"source_name": "Acme Band", "modality": "sensed"},
        "user_id": "partner-user-17",
    },
    "body": {
        "heart_rate": {"value": 64, "unit": "beats/min"},
        "effective_time_frame": {"date_time": "2026-01-15T08:29:00Z"},
    },
}
_EXAMPLE_FHIR = {
    "resourceType": "Observation",
    "id": "hr-1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/partner-user-17"},
    "effectiveDateTime": "2026-01-15T08:29:00Z",
    "valueQuantity": {
        "value": 64,
        "unit": "beats/minute",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    },
}
_WEBHOOK_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One data point or an array of at most 5,000 (5 MiB), signed with "
        "`Vitals-Signature: t=UNIX_SECONDS,v1=HEX`, HEX = HMAC-SHA256(webhook_secret, "
        '"{t}.{raw_body}").',
        "content": {
            "application/json": {
                "schema": {"oneOf": [{"type": "object"}, {"type": "array", "maxItems": MAX_ITEMS}]},
                "examples": {
                    "one": {"summary": "One Open mHealth data point", "value": _EXAMPLE_POINT},
                    "array": {"summary": "An array of data points", "value": [_EXAMPLE_POINT]},
                },
            },
            "application/fhir+json": {
                "schema": {"type": "object"},
                "examples": {
                    "observation": {"summary": "A FHIR R4 Observation", "value": _EXAMPLE_FHIR},
                    "bundle": {
                        "summary": "A Bundle of Observations",
                        "value": {
                            "resourceType": "Bundle",
                            "type": "collection",
                            "entry": [{"resource": _EXAMPLE_FHIR}],
                        },
                    },
                },
            },
        },
    }
}
_WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": WebhookResult,
        "description": "Every accepted reading is committed. Results are in input order.",
        "content": {
            "application/json": {
                "example": {
                    "accepted": 1,
                    "duplicates": 0,
                    "rejected": 1,
                    "results": [
                        {"id": "a1", "status": "accepted", "reason": None, "detail": None},
                        {
                            "id": "a2",
                            "status": "rejected",
                            "reason": "no_consent",
                            "detail": "no consent covers this provider, data type and "
                            "effective time",
                        },
                    ],
                }
            }
        },
    },
    400: {"model": ErrorBody, "description": "Malformed JSON or wrong top-level shape"},
    401: {"model": ErrorBody, "description": "Signature missing, wrong, or stale"},
    404: {"model": ErrorBody, "description": "Unknown, suspended or removed provider"},
    413: {"model": ErrorBody, "description": "More than 5 MiB or 5,000 items"},
    415: {"model": ErrorBody, "description": "Not application/json or application/fhir+json"},
    503: {"model": ErrorBody, "description": "Storage unavailable; nothing was stored"},
}


# Body handling -------------------------------------------------------------------


async def read_limited(
    request: Request, limit: int, on_chunk: Callable[[bytes], object] | None = None
) -> bytes | None:
    """The raw body, or None as soon as it exceeds `limit` bytes (rest unread).

    `on_chunk` sees every chunk as it arrives (the signature's HMAC is fed here).
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        if on_chunk is not None:
            on_chunk(chunk)
        chunks.append(chunk)
    return b"".join(chunks)


def payload_format(content_type: str | None, payload: object) -> Format | None:
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/fhir+json":
        return "fhir"
    if media in ("", "application/json"):
        # A FHIR resource sent as plain JSON is still recognisable.
        if isinstance(payload, dict) and "resourceType" in payload:
            return "fhir"
        return "omh"
    return None


def item_count(payload: object, fmt: Format) -> int:
    if fmt == "omh":
        return len(payload) if isinstance(payload, list) else 1
    if isinstance(payload, dict) and isinstance(payload.get("entry"), list):
        return len(payload["entry"])
    return 1


# Middleware ----------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestMetrics:
    """Latency histogram and one JSON log line per request, by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(elapsed)
            if route not in ("/healthz", "/metrics", "/readyz"):
                log.info(
                    "request",
                    extra={
                        "event": "request",
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )


_WEBHOOK_PATH = re.compile(r"/v1/providers/[^/]+/readings")
PUBLIC_ROUTES = frozenset({("GET", "/healthz"), ("GET", "/readyz")})


class PublicListener:
    """With a separate admin listener, every other listener (the public one) serves
    only the webhook and the health checks: the admin API, /docs, /openapi.json
    and /metrics answer 404 there, before any route, body or token is looked at."""

    def __init__(self, app: ASGIApp, admin_port: int) -> None:
        self.app = app
        self.admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            body = orjson.dumps({"error": "not_found", "detail": "not served on this listener"})
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        server = scope.get("server")
        if server and server[1] == self.admin_port:
            return True
        method, path = scope["method"], scope["path"]
        if (method, path) in PUBLIC_ROUTES:
            return True
        return method == "POST" and _WEBHOOK_PATH.fullmatch(path) is not None


# The app ------------------------------------------------------------------------


def create_app(
    settings: Settings,
    *,
    pool: psycopg_pool.ConnectionPool | None = None,
    demo: bool = False,
    admin_port: int | None = None,
) -> FastAPI:
    """Build the app. Refuses (SettingsError) a short or placeholder secret key or
    VITALS_ADMIN_TOKEN.

    With `pool`, the caller owns it; otherwise the lifespan opens one from
    VITALS_DATABASE_URL and closes it at shutdown. With `admin_port`, only a
    listener on that port serves the admin API, /docs and /metrics; any other
    serves the webhook and health checks only (`PublicListener`).
    """
    master = settings.require_secret_key(demo=demo)
    if pool is None:
        settings.require_database_url()
    token = settings.require_admin_token(demo=demo)  # refuses a short one outside demo
    register_transport(TRANSPORT)
    rt = Runtime(
        settings=settings,
        master=master,
        admin_token_hash=hashlib.sha256(token.encode()).digest() if token else None,
        demo=demo,
        pool=pool,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if rt.pool is None:
            rt.pool = make_pool(
                settings.require_database_url(),
                min_size=settings.pool_min_size,
                max_size=settings.pool_max_size,
                timeout=3.0,  # then 503: a dead database is reported, not waited on
            )
            rt.owns_pool = True
        rt.providers = ProviderCache(rt.pool, master, PROVIDER_CACHE_TTL_S)
        rt.coalescer = CoalescingWriter(
            Writer(rt.pool), TRANSPORT, max_batch=settings.batch_max_readings
        )
        log.info("http transport started", extra={"event": "started"})
        try:
            yield
        finally:
            await run_in_threadpool(rt.coalescer.close)
            if rt.owns_pool:
                await run_in_threadpool(rt.pool.close)
                rt.pool = None
            log.info("http transport stopped", extra={"event": "stopped"})

    app = FastAPI(
        title="vitals",
        version="1",
        summary="Consent-gated health telemetry: signed partner webhooks and the admin API.",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.add_middleware(RequestMetrics)
    if admin_port is not None:
        app.add_middleware(PublicListener, admin_port=admin_port)

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="The database is reachable and migrations are current",
        responses={503: {"description": "Not ready"}},
    )
    def readyz() -> Response:
        try:
            pool = rt.require_pool()
            with translate_errors(), pool.connection(timeout=min(2.0, pool.timeout)) as conn:
                waiting = [m.path.name for m in pending(conn)]
        except StorageError as e:
            return json_response(
                {"status": "unavailable", "detail": type(e).__name__},
                503,
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        if waiting:
            return json_response({"status": "migrations_pending", "pending": waiting}, 503)
        return json_response({"status": "ready"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/providers/{provider_id}/readings",
        tags=["webhook"],
        summary="Push readings (signed)",
        response_model=WebhookResult,
        responses=_WEBHOOK_RESPONSES,
        openapi_extra=_WEBHOOK_OPENAPI,
    )
    async def post_readings(
        provider_id: str,
        request: Request,
        vitals_signature: Annotated[
            str | None,
            Header(
                alias=SIGNATURE_HEADER,
                description="t=UNIX_SECONDS,v1=HEX; HEX = HMAC-SHA256(secret, f'{t}.{raw_body}')",
            ),
        ] = None,
    ) -> Response:
        return await _webhook(rt, provider_id, request, vitals_signature)

    from ingest.api_admin import install_handlers, router
    from ingest.api_purposes import router as purposes_router
    from ingest.api_rights import router as rights_router

    install_handlers(app)
    app.include_router(router)
    app.include_router(rights_router)
    app.include_router(purposes_router)
    return app


async def _webhook(
    rt: Runtime, provider_id: str, request: Request, signature: str | None
) -> Response:
    assert rt.providers is not None and rt.coalescer is not None
    provider = rt.providers.cached(provider_id)
    if provider is None:
        try:
            provider = await run_in_threadpool(rt.providers.get, provider_id)
        except StorageUnavailable:
            return unavailable()
    if provider is None or not provider.active:
        return error(404, "unknown_provider", "no active provider with this id")
    # A missing, garbled or stale header is refused before a byte of the body is
    # read; the HMAC is computed while the body streams in, and checked before
    # the body is parsed.
    header = parse_signature(signature, time.time())
    if isinstance(header, str):
        return error(401, "bad_signature", header)
    mac = header.start(provider.secret)
    body = await read_limited(request, MAX_BODY_BYTES, mac.update)
    if body is None:
        return error(413, "too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
    if not header.matches(mac):
        return error(401, "bad_signature", SIGNATURE_MISMATCH)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return error(400, "malformed_json", "the body is not valid UTF-8 JSON")
    fmt = payload_format(request.headers.get("content-type"), payload)
    if fmt is None:
        return error(
            415, "unsupported_media_type", "send application/json or application/fhir+json"
        )
    if item_count(payload, fmt) > MAX_ITEMS:
        return error(413, "too_many_items", f"at most {MAX_ITEMS} data points per request")
    try:
        if item_count(payload, fmt) <= INLINE_PARSE_ITEMS:
            parsed = parse_payload(payload, fmt, max_items=MAX_ITEMS)
        else:  # keep the event loop free while a large batch is validated
            parsed = await run_in_threadpool(parse_payload, payload, fmt, max_items=MAX_ITEMS)
    except ShapeError as e:
        return error(400, "wrong_shape", str(e))
    try:
        future = rt.coalescer.submit([(provider.provider_id, p) for p in parsed])
        outcomes = await asyncio.wrap_future(future)
    except StorageUnavailable:
        return unavailable()
    except StorageError:
        log.exception("storage error", extra={"event": "storage_error"})
        return error(500, "storage_error", "the readings could not be stored")
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for o in outcomes:
        counts[o.status] += 1
    log.info(
        "readings",
        extra={
            "event": "readings",
            "provider_id": provider.provider_id,
            "items": len(outcomes),
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
        },
    )
    return json_response(
        {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "results": [o.as_dict() for o in outcomes],
        }
    )


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
    # After create_app: building the app imports the flows, and importing
    # Prefect replaces uvicorn's log handlers with plain-text ones.
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
