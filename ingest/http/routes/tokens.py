"""Bearer tokens (role `admin`): created with a role and an expiry, shown once
and stored hashed; listed without the tokens themselves; revoked by id."""

from __future__ import annotations

from fastapi import APIRouter, Response

from core import crypto
from ingest.http.deps import AsAdmin, Tx
from ingest.http.errors import json_response
from ingest.http.models import TokenIn
from store import reads, registry

router = APIRouter(prefix="/v1", tags=["tokens"])


@router.post(
    "/tokens", status_code=201, summary="Create a bearer token (shown once; stored hashed)"
)
def create_token(body: TokenIn, who: AsAdmin, conn: Tx) -> Response:
    result = registry.create_token(conn, body.name, body.role, who.actor, body.expires_in_days)
    result["token_id"] = crypto.token_hash(result["token"]).hex()
    return json_response(result, 201)


@router.get("/tokens", summary="List tokens (never the tokens themselves)")
def list_tokens(who: AsAdmin, conn: Tx) -> Response:
    return json_response(reads.tokens(conn, who.actor))


@router.delete("/tokens/{token_id}", summary="Revoke a token")
def revoke_token(token_id: str, who: AsAdmin, conn: Tx) -> Response:
    return json_response(registry.revoke_token(conn, token_id, who.actor))
