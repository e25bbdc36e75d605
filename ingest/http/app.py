"""The app factory: `create_app(settings)` builds the FastAPI app; its lifespan
has `bootstrap` build the services (the pool, unless given one, and the
webhook's gate over a coalescing writer), opens the provider cache, and closes
them at shutdown (the gate's writer drains first, then the pool if it is ours)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from bootstrap import build_services
from core.metrics import register_transport
from core.settings import Settings
from ingest.http import webhook
from ingest.http.deps import Runtime
from ingest.http.errors import install_handlers
from ingest.http.middleware import PublicListener, RequestMetrics
from ingest.http.models import MAX_ITEMS
from ingest.http.routes import (
    audit,
    exports,
    objections,
    operations,
    partners,
    providers,
    rights,
    subjects,
    tokens,
)
from ingest.http.signatures import PROVIDER_CACHE_TTL_S, ProviderCache
from store.db import Pool

log = logging.getLogger("vitals.http")

# In this order in the OpenAPI document.
ROUTERS = (
    operations.router,
    webhook.router,
    providers.router,
    tokens.router,
    subjects.router,
    audit.router,
    exports.router,
    rights.router,
    partners.router,
    objections.router,
)


def create_app(
    settings: Settings,
    *,
    pool: Pool | None = None,
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
    register_transport(webhook.TRANSPORT)
    rt = Runtime(
        settings=settings,
        master=master,
        admin_token_hash=hashlib.sha256(token.encode()).digest() if token else None,
        demo=demo,
        pool=pool,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(
            settings,
            webhook.TRANSPORT,
            pool=rt.pool,
            pool_min=settings.pool_min_size,
            pool_max=settings.pool_max_size,
            pool_timeout=3.0,  # then 503: a dead database is reported, not waited on
            coalesce=True,  # concurrent requests share transactions
            max_batch=settings.batch_max_readings,
            max_items=MAX_ITEMS,
        )
        rt.pool, rt.gate = services.pool, services.gate
        rt.providers = ProviderCache(rt.pool, master, PROVIDER_CACHE_TTL_S)
        log.info("http transport started", extra={"event": "started"})
        try:
            yield
        finally:
            await run_in_threadpool(services.close)
            if services.owns_pool:
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
    install_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
