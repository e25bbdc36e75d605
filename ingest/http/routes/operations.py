"""Health, readiness and Prometheus metrics (no token: served on the public
listener too, /metrics on the admin listener only)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from core.errors import StorageError
from core.metrics import exposition as metrics_text
from ingest.http.deps import RuntimeDep
from ingest.http.errors import RETRY_AFTER_S, json_response
from store.migrate import pending_names

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database is reachable and migrations are current",
    responses={503: {"description": "Not ready"}},
)
def readyz(rt: RuntimeDep) -> Response:
    try:
        waiting = pending_names(rt.require_pool(), wait=2.0)
    except StorageError as e:
        return json_response(
            {"status": "unavailable", "detail": type(e).__name__},
            503,
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    if waiting:
        return json_response({"status": "migrations_pending", "pending": waiting}, 503)
    return json_response({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics")
def metrics() -> Response:
    return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)
