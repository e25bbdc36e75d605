"""Roles of the admin API without a database: the bootstrap token is `admin`,
`admin` may do what `dpo` may, `dpo` what `analyst` may, and refusals are 401
(nobody) or 403 (a role that may not)."""

from __future__ import annotations

import hashlib

import pytest

from core.errors import StorageUnavailable
from core.settings import Settings
from ingest.http.deps import (
    ADMIN,
    ANALYST,
    BOOTSTRAP_ACTOR,
    DPO,
    Principal,
    Runtime,
    authenticate,
    permit,
)
from ingest.http.errors import ApiError

BOOTSTRAP = "bootstrap-admin-token-unit-4e1f9a7c3b"


def runtime(admin_token: str | None = BOOTSTRAP) -> Runtime:
    """A runtime that has not started: no pool, so any database lookup fails."""
    digest = hashlib.sha256(admin_token.encode()).digest() if admin_token else None
    return Runtime(
        settings=Settings(database_url="postgresql://unit@127.0.0.1:1/none"),
        master=b"m" * 32,
        admin_token_hash=digest,
        demo=False,
    )


def test_the_bootstrap_token_is_admin_without_a_database() -> None:
    assert authenticate(runtime(), BOOTSTRAP) == Principal(BOOTSTRAP_ACTOR, "admin")


def test_any_other_token_is_looked_up_in_the_registry() -> None:
    with pytest.raises(StorageUnavailable):
        authenticate(runtime(), BOOTSTRAP + "x")
    with pytest.raises(StorageUnavailable):
        authenticate(runtime(admin_token=None), BOOTSTRAP)


def test_roles_nest() -> None:
    assert set(ADMIN) < set(DPO) < set(ANALYST)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("admin", (ADMIN, DPO, ANALYST)),
        ("dpo", (DPO, ANALYST)),
        ("analyst", (ANALYST,)),
    ],
)
def test_a_role_may_do_what_its_level_allows_and_no_more(
    role: str, allowed: tuple[tuple[str, ...], ...]
) -> None:
    who = Principal(f"token:{role}-1", role)
    for roles in (ADMIN, DPO, ANALYST):
        if roles in allowed:
            assert permit(who, roles) is who
        else:
            with pytest.raises(ApiError) as refused:
                permit(who, roles)
            assert (refused.value.status, refused.value.code) == (403, "forbidden")


def test_nobody_is_401() -> None:
    with pytest.raises(ApiError) as refused:
        permit(None, ANALYST)
    assert (refused.value.status, refused.value.code) == (401, "unauthenticated")
