"""What a route may ask for, as typed dependencies:

- `RuntimeDep`: the app's `Runtime` (settings, master key, pool, gate, caches);
- `AsAdmin`, `AsDpo`, `AsAnalyst`: the caller's `Principal`, when its bearer
  token's role may do this (roles `admin` ⊃ `dpo` ⊃ `analyst`);
- `Tx`: the request's connection, in one transaction (`store.db.transaction`)
  that commits after the route returns and before the response is sent, and
  rolls back when the route raises.

Declare the principal before `Tx`: dependencies are solved in that order, so a
caller is authenticated (on a short connection of its own) before the
request's connection is taken from the pool, and never holds two at once.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core import crypto
from core.errors import StorageUnavailable
from core.settings import Settings
from ingest.gate import Gate
from ingest.http.errors import ApiError
from ingest.http.signatures import ProviderCache
from store import registry
from store.db import Connection, Pool, transaction

ADMIN = ("admin",)
DPO = ("admin", "dpo")
ANALYST = ("admin", "dpo", "analyst")
BOOTSTRAP_ACTOR = "admin-token"


@dataclass
class Runtime:
    """Everything a request needs; built by `create_app`, started by its lifespan."""

    settings: Settings
    master: bytes
    admin_token_hash: bytes | None
    demo: bool
    pool: Pool | None = None
    gate: Gate | None = None
    providers: ProviderCache | None = None

    def require_pool(self) -> Pool:
        if self.pool is None:
            raise StorageUnavailable("the application has not started")
        return self.pool


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


def request_transaction(rt: RuntimeDep) -> Iterator[Connection]:
    with transaction(rt.require_pool()) as conn:
        yield conn


# scope="function": the transaction ends when the route returns, before the
# response is sent, so a 2xx always means committed (and a failed commit is an
# error response, not a success).
Tx = Annotated[Connection, Depends(request_transaction, scope="function")]


# Roles ---------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/tokens")


@dataclass(frozen=True, slots=True)
class Principal:
    actor: str
    role: str


def authenticate(rt: Runtime, token: str) -> Principal | None:
    """The principal of `token`: VITALS_ADMIN_TOKEN (compared by hash) or an
    unrevoked, unexpired token of the registry; None for anything else."""
    digest = crypto.token_hash(token)
    if rt.admin_token_hash is not None and hmac.compare_digest(digest, rt.admin_token_hash):
        return Principal(BOOTSTRAP_ACTOR, "admin")
    with transaction(rt.require_pool()) as conn:
        found = registry.token_role(conn, token)
    return Principal(f"token:{found[0]}", found[1]) if found else None


def permit(principal: Principal | None, roles: tuple[str, ...]) -> Principal:
    """`principal` if it may act in one of `roles`; else 401 (nobody) or 403."""
    if principal is None:
        raise ApiError(401, "unauthenticated", "unknown, expired or revoked token")
    if principal.role not in roles:
        raise ApiError(403, "forbidden", f"role {principal.role} may not do this")
    return principal


def require(*roles: str) -> Any:
    """Dependency: the caller's principal, if its role is one of `roles`."""

    def dependency(
        rt: RuntimeDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None or not credentials.credentials:
            raise ApiError(401, "unauthenticated", "send Authorization: Bearer TOKEN")
        return permit(authenticate(rt, credentials.credentials), roles)

    return Depends(dependency)


AsAdmin = Annotated[Principal, require(*ADMIN)]
AsDpo = Annotated[Principal, require(*DPO)]
AsAnalyst = Annotated[Principal, require(*ANALYST)]
