"""The admin API under /v1/: bearer tokens (stored hashed) with roles.

- `admin`: providers and tokens (and everything a `dpo` may do);
- `dpo`: subjects, links, consents and their append-only history, the audit log;
- `analyst`: export manifests only.

`VITALS_ADMIN_TOKEN` acts as an `admin` token (compared by hash). Every call
by an admin or dpo, and every read of personal data, writes an audit row in
the same transaction as the work (registry changes are audited by
`store.registry`; reads here).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.rows import dict_row
from pydantic import AliasChoices, BaseModel, Field

from core import crypto
from core.errors import InputError, NotFound, StorageError, StorageUnavailable
from ingest import providers
from ingest.http import Runtime, error, json_response, runtime, unavailable
from store import registry
from store.db import q, translate_errors

ADMIN = ("admin",)
DPO = ("admin", "dpo")
ANALYST = ("admin", "dpo", "analyst")
BOOTSTRAP_ACTOR = "admin-token"

_bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/tokens")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    actor: str
    role: str


@contextmanager
def transaction(rt: Runtime) -> Iterator[psycopg.Connection]:
    """One pooled connection, committed when the block succeeds."""
    with translate_errors(), rt.require_pool().connection() as conn:
        yield conn


def authenticate(rt: Runtime, token: str) -> Principal | None:
    digest = crypto.token_hash(token)
    if rt.admin_token_hash is not None and hmac.compare_digest(digest, rt.admin_token_hash):
        return Principal(BOOTSTRAP_ACTOR, "admin")
    with transaction(rt) as conn:
        found = registry.token_role(conn, token)
    return Principal(f"token:{found[0]}", found[1]) if found else None


def require(*roles: str) -> Any:
    """Dependency: the caller's principal, if its role is one of `roles`."""

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None or not credentials.credentials:
            raise ApiError(401, "unauthenticated", "send Authorization: Bearer TOKEN")
        principal = authenticate(runtime(request), credentials.credentials)
        if principal is None:
            raise ApiError(401, "unauthenticated", "unknown, expired or revoked token")
        if principal.role not in roles:
            raise ApiError(403, "forbidden", f"role {principal.role} may not do this")
        return principal

    return Depends(dependency)


def install_handlers(app: FastAPI) -> None:
    """Map the project's errors to JSON `{"error", "detail"}` responses."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error(exc.status, exc.code, exc.detail, headers)

    async def on_input_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InputError)
        status = 404 if isinstance(exc, NotFound) else 409 if exc.code == "duplicate" else 400
        return error(status, exc.code, str(exc))

    async def on_storage_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StorageUnavailable):
            return unavailable()
        return error(500, "storage_error", "the database refused the operation")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(InputError, on_input_error)
    app.add_exception_handler(StorageError, on_storage_error)


router = APIRouter(prefix="/v1")
AsAdmin = Annotated[Principal, require(*ADMIN)]
AsDpo = Annotated[Principal, require(*DPO)]
AsAnalyst = Annotated[Principal, require(*ANALYST)]

# Request bodies -------------------------------------------------------------------


class ProviderIn(BaseModel):
    name: str = Field(examples=["Acme Wearables"])
    types: list[str] = Field(examples=[["heart-rate", "blood-pressure"]])


class ProviderStatusIn(BaseModel):
    status: Literal["active", "suspended", "removed"]


class TokenIn(BaseModel):
    name: str = Field(examples=["dpo-alice"])
    role: Literal["admin", "dpo", "analyst"]
    expires_in_days: int = Field(
        registry.TOKEN_DAYS_DEFAULT,
        ge=1,
        le=registry.TOKEN_DAYS_MAX,
        description="Days until the token stops working",
    )


class LinkIn(BaseModel):
    provider_id: str
    user_ref: str = Field(examples=["partner-user-17"])


class SubjectIn(BaseModel):
    residency: Literal["FI", "EU"]
    links: list[LinkIn] = Field(default_factory=list)


class ConsentIn(BaseModel):
    purpose: Literal["collection", "location", "analytics", "research", "marketing"]
    provider_id: str | None = None
    types: list[str] | None = Field(None, examples=[["heart-rate"]])
    valid_from: datetime | None = Field(
        None, validation_alias=AliasChoices("valid_from", "from"), examples=["2026-01-01T00:00Z"]
    )
    valid_until: datetime | None = Field(
        None, validation_alias=AliasChoices("valid_until", "until")
    )


# Providers (admin) ------------------------------------------------------------------

_PUBLIC_PROVIDER = ("provider_id", "name", "types", "mqtt_username", "status", "created_at")


@router.post("/providers", status_code=201, tags=["providers"], summary="Register a provider")
def add_provider(body: ProviderIn, request: Request, who: AsAdmin) -> Response:
    rt = runtime(request)
    with transaction(rt) as conn:
        result = providers.add_provider(
            conn,
            rt.master,
            body.name,
            body.types,
            who.actor,
            mqtt_admin_url=rt.settings.mqtt_admin(),
        )
    return json_response(result, 201)


@router.get("/providers", tags=["providers"], summary="List providers")
def list_providers(request: Request, who: AsAdmin) -> Response:
    with transaction(runtime(request)) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(q("list_providers")).fetchall()
        registry.audit(conn, who.actor, "provider.list")
    return json_response(rows)


@router.get("/providers/{provider_id}", tags=["providers"], summary="One provider")
def get_provider(provider_id: str, request: Request, who: AsAdmin) -> Response:
    with transaction(runtime(request)) as conn:
        row = registry.get_provider(conn, provider_id)
        if row is None:
            raise NotFound("provider", provider_id)
        registry.audit(conn, who.actor, "provider.read", provider_id=str(row["provider_id"]))
    return json_response({k: row[k] for k in _PUBLIC_PROVIDER})


@router.patch(
    "/providers/{provider_id}",
    tags=["providers"],
    summary="Suspend, remove or reactivate a provider",
)
def set_provider_status(
    provider_id: str, body: ProviderStatusIn, request: Request, who: AsAdmin
) -> Response:
    rt = runtime(request)
    with transaction(rt) as conn:
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


# Tokens (admin) ---------------------------------------------------------------------


@router.post(
    "/tokens",
    status_code=201,
    tags=["tokens"],
    summary="Create a bearer token (shown once; stored hashed)",
)
def create_token(body: TokenIn, request: Request, who: AsAdmin) -> Response:
    with transaction(runtime(request)) as conn:
        result = registry.create_token(conn, body.name, body.role, who.actor, body.expires_in_days)
    result["token_id"] = crypto.token_hash(result["token"]).hex()
    return json_response(result, 201)


@router.get("/tokens", tags=["tokens"], summary="List tokens (never the tokens themselves)")
def list_tokens(request: Request, who: AsAdmin) -> Response:
    with transaction(runtime(request)) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(q("api_list_tokens")).fetchall()
        registry.audit(conn, who.actor, "token.list")
    return json_response(rows)


@router.delete("/tokens/{token_id}", tags=["tokens"], summary="Revoke a token")
def revoke_token(token_id: str, request: Request, who: AsAdmin) -> Response:
    token_id = token_id.lower()
    if len(token_id) != 64 or any(c not in "0123456789abcdef" for c in token_id):
        raise NotFound("token", token_id)
    with transaction(runtime(request)) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("api_revoke_token"), {"token_id": token_id}).fetchone()
        if row is None:
            raise NotFound("token", token_id)
        registry.audit(conn, who.actor, "token.revoke", name=row["name"], role=row["role"])
    return json_response(row)


# Subjects, links, consents (dpo) -------------------------------------------------


@router.post("/subjects", status_code=201, tags=["subjects"], summary="Add a subject")
def add_subject(body: SubjectIn, request: Request, who: AsDpo) -> Response:
    links = [(link.provider_id, link.user_ref) for link in body.links]
    with transaction(runtime(request)) as conn:
        result = registry.add_subject(conn, body.residency, links, who.actor)
    return json_response(result, 201)


@router.get("/subjects/{subject_id}", tags=["subjects"], summary="A subject and its links")
def get_subject(subject_id: str, request: Request, who: AsDpo) -> Response:
    with transaction(runtime(request)) as conn:
        row = registry.get_subject(conn, subject_id)
        registry.audit(conn, who.actor, "subject.read", row["subject_id"])
    return json_response(row)


@router.post(
    "/subjects/{subject_id}/links",
    status_code=201,
    tags=["subjects"],
    summary="Link a provider's user ref to the subject",
)
def add_link(subject_id: str, body: LinkIn, request: Request, who: AsDpo) -> Response:
    with transaction(runtime(request)) as conn:
        registry.add_link(conn, subject_id, body.provider_id, body.user_ref, who.actor)
    return json_response(
        {"subject_id": subject_id, "provider_id": body.provider_id, "user_ref": body.user_ref},
        201,
    )


@router.get(
    "/subjects/{subject_id}/consents",
    tags=["consents"],
    summary="The subject's consent history (append-only: grants and withdrawals)",
)
def consent_history(subject_id: str, request: Request, who: AsDpo) -> Response:
    with transaction(runtime(request)) as conn:
        subject = registry.get_subject(conn, subject_id)
        rows = registry.consent_history(conn, subject["subject_id"])
        registry.audit(conn, who.actor, "consent.read", subject["subject_id"])
    return json_response(rows)


@router.post(
    "/subjects/{subject_id}/consents",
    status_code=201,
    tags=["consents"],
    summary="Record a consent",
)
def grant_consent(subject_id: str, body: ConsentIn, request: Request, who: AsDpo) -> Response:
    with transaction(runtime(request)) as conn:
        result = registry.grant_consent(
            conn,
            subject_id,
            body.purpose,
            who.actor,
            provider_id=body.provider_id,
            types=body.types,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
        )
    return json_response(result, 201)


@router.post(
    "/consents/{consent_id}/withdraw",
    tags=["consents"],
    summary="Withdraw a consent (effective for every reading committed after this returns)",
)
def withdraw_consent(consent_id: str, request: Request, who: AsDpo) -> Response:
    with transaction(runtime(request)) as conn:
        result = registry.withdraw_consent(conn, consent_id, who.actor)
    return json_response(result)


# Audit log (dpo) ----------------------------------------------------------------------


@router.get("/audit", tags=["audit"], summary="Read the audit log, newest first")
def read_audit(
    request: Request,
    who: AsDpo,
    actor: str | None = None,
    action: str | None = None,
    subject: Annotated[str | None, Query(description="subject id (or its erasure hash)")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: Annotated[int | None, Query(ge=0, le=2**62, description="audit_id cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    for t in (since, until):
        if t is not None and t.tzinfo is None:
            raise InputError("invalid_time", "since/until need a UTC offset (e.g. Z)")
    params: dict[str, Any] = {
        "actor": actor,
        "action": action,
        "subject_ref": None,
        "since": since,
        "until": until,
        "before": before,
        "limit": limit,
    }
    rt = runtime(request)
    with transaction(rt) as conn, conn.cursor(row_factory=dict_row) as cur:
        # A subject id in any case or form is searched (and recorded) as the log
        # names it: the canonical id, or its keyed hash once erased.
        if subject is not None:
            params["subject_ref"] = registry.audit_subject_ref(conn, rt.master, subject)
        rows = cur.execute(q("api_audit_search"), params).fetchall()
        filters = {k: str(v) for k, v in params.items() if v is not None and k != "limit"}
        registry.audit(conn, who.actor, "audit.read", params["subject_ref"], filters=filters)
    return json_response(rows)


# Export manifests (analyst) ---------------------------------------------------------


@router.get("/exports", tags=["exports"], summary="List exports")
def list_exports(request: Request, who: AsAnalyst) -> Response:
    with transaction(runtime(request)) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(q("api_list_exports")).fetchall()
        registry.audit(conn, who.actor, "export.list")
    return json_response([{k: v for k, v in r.items() if k != "path"} for r in rows])


@router.get("/exports/{export_id}", tags=["exports"], summary="An export and its _manifest.json")
def get_export(export_id: str, request: Request, who: AsAnalyst) -> Response:
    with transaction(runtime(request)) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("api_get_export"), {"export_id": export_id}).fetchone()
        if row is None:
            raise NotFound("export", export_id)
        registry.audit(conn, who.actor, "export.read", export_id=export_id)
    manifest_path = Path(row.pop("path")) / "_manifest.json"
    try:
        row["manifest"] = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        row["manifest"] = None
    return json_response(row)
