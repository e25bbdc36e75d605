"""ASGI middleware: a latency histogram and one JSON log line per request
(`RequestMetrics`), and the public listener that serves only the webhook and
the health checks when the admin API has a listener of its own (`PublicListener`)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from core.metrics import HTTP_REQUEST_SECONDS

log = logging.getLogger("vitals.http")

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
