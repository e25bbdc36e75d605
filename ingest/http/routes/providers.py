"""Providers (role `admin`): register, list, read, suspend / remove / reactivate.
A provider's broker account follows its status (`ingest.providers`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ingest import providers
from ingest.http.deps import AsAdmin, RuntimeDep, Tx
from ingest.http.errors import json_response
from ingest.http.models import ProviderIn, ProviderStatusIn
from store import reads
from store.db import transaction

router = APIRouter(prefix="/v1", tags=["providers"])


@router.post("/providers", status_code=201, summary="Register a provider")
def add_provider(body: ProviderIn, rt: RuntimeDep, who: AsAdmin, conn: Tx) -> Response:
    result = providers.add_provider(
        conn,
        rt.master,
        body.name,
        body.types,
        who.actor,
        mqtt_admin_url=rt.settings.mqtt_admin(),
    )
    return json_response(result, 201)


@router.get("/providers", summary="List providers")
def list_providers(who: AsAdmin, conn: Tx) -> Response:
    return json_response(reads.providers(conn, who.actor))


@router.get("/providers/{provider_id}", summary="One provider")
def get_provider(provider_id: str, who: AsAdmin, conn: Tx) -> Response:
    return json_response(reads.provider(conn, provider_id, who.actor))


@router.patch("/providers/{provider_id}", summary="Suspend, remove or reactivate a provider")
def set_provider_status(
    provider_id: str, body: ProviderStatusIn, rt: RuntimeDep, who: AsAdmin
) -> Response:
    # Its own transaction, not `Tx`: the webhook's provider cache is cleared
    # only after the new status is committed, so it cannot cache the old one again.
    with transaction(rt.require_pool()) as conn:
        result = providers.set_provider_status(
            conn,
            provider_id,
            body.status,
            who.actor,
            mqtt_admin_url=rt.settings.mqtt_admin(),
        )
    if rt.providers is not None:
        rt.providers.invalidate(provider_id)
    return json_response(result)
