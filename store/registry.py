"""The registry: providers, subjects, links, consents, tokens and the audit log.

Shared by the CLI, the admin API, the demo and the flows. One transaction
convention: each function takes an open connection and runs in its caller's
transaction (a savepoint at most); the caller commits. Writers add an audit
row. Bad input raises `InputError` (`NotFound` for a missing thing).
Broker accounts are not kept here: `ingest.providers` orchestrates them.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core import crypto
from core.errors import InputError, NotFound
from schemas.reading import TYPES
from store.db import q

PURPOSES = ("collection", "location", "analytics", "research", "marketing")
RESIDENCIES = ("FI", "EU")
ROLES = ("admin", "dpo", "analyst")
TOKEN_DAYS_DEFAULT = 90
TOKEN_DAYS_MAX = 365


def parse_uuid(value: str | uuid.UUID, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InputError("invalid_id", f"{what} {value!r} is not a valid id") from None


def check_types(types: Iterable[str]) -> list[str]:
    found = [t.strip() for t in types if t.strip()]
    unknown = sorted(set(found) - set(TYPES))
    if unknown:
        raise InputError("unsupported_type", f"unknown data types: {', '.join(unknown)}")
    if not found:
        raise InputError("invalid_types", "at least one data type is required")
    return sorted(set(found), key=TYPES.index)


def erased_subject_ref(master: bytes, subject_id: str | uuid.UUID) -> str:
    """The keyed hash that replaces a subject id after erasure (in the audit
    log and the erasure receipt)."""
    return "erased:" + crypto.keyed_hash(master, "erasure-receipt", str(subject_id))


def audit_subject_ref(conn: psycopg.Connection, master: bytes, subject: str) -> str:
    """The audit log's name for a subject given in any form (any case, with or
    without hyphens): its canonical id while the subject exists, its erasure
    hash once it is gone, so a search after erasure never writes the id again.
    Anything that is not a subject id (an erasure hash) is returned as is."""
    try:
        sid = uuid.UUID(subject)
    except ValueError:
        return subject
    if conn.execute(q("share_lock_subject"), {"subject_id": sid}).fetchone() is None:
        return erased_subject_ref(master, sid)
    return str(sid)


def audit(
    conn: psycopg.Connection,
    actor: str,
    action: str,
    subject_ref: str | uuid.UUID | None = None,
    **detail: Any,
) -> None:
    """One audit row, in the caller's transaction.

    A subject id is stored in its canonical form (lower case, hyphenated),
    whatever form the caller was given, and must name an existing subject: its
    row is share-locked, so an erasure deleting the subject either waits for
    this transaction (and then pseudonymises this row too) or has already
    committed (then this raises NotFound and nothing is written).
    """
    ref = str(subject_ref) if subject_ref else None
    if ref is not None and not ref.startswith("erased:"):
        try:
            sid = uuid.UUID(ref)
        except ValueError:
            sid = None
        if sid is not None:
            if conn.execute(q("share_lock_subject"), {"subject_id": sid}).fetchone() is None:
                raise NotFound("subject", ref)
            ref = str(sid)
    conn.execute(
        q("insert_audit"),
        {"actor": actor, "action": action, "subject_ref": ref, "detail": Jsonb(detail)},
    )


# Providers -------------------------------------------------------------------


def add_provider(
    conn: psycopg.Connection,
    master: bytes,
    name: str,
    types: Sequence[str],
    actor: str,
) -> dict[str, Any]:
    """Register a provider (its webhook secret encrypted at rest). Returns
    `{"provider_id", "webhook_secret", "standard_webhooks_secret", "mqtt": None}`
    (the last two are one HMAC key in two forms, `core.crypto.standard_webhooks_secret`);
    a broker account is added by `ingest.providers.add_provider`."""
    types = check_types(types)
    if not name.strip():
        raise InputError("invalid_name", "provider name must not be empty")
    provider_id = uuid.uuid4()
    secret = "whsec_" + secrets.token_urlsafe(32)
    try:
        with conn.transaction():
            conn.execute(
                q("insert_provider"),
                {
                    "provider_id": provider_id,
                    "name": name.strip(),
                    "types": types,
                    "secret": crypto.encrypt(master, secret),
                    "mqtt_username": None,
                },
            )
    except psycopg.errors.UniqueViolation:
        raise InputError("duplicate", f"a provider named {name!r} already exists") from None
    audit(conn, actor, "provider.add", provider_id=str(provider_id), types=types)
    return {
        "provider_id": str(provider_id),
        "webhook_secret": secret,
        "standard_webhooks_secret": crypto.standard_webhooks_secret(secret),
        "mqtt": None,
    }


def set_provider_mqtt(
    conn: psycopg.Connection, provider_id: str | uuid.UUID, mqtt_username: str
) -> None:
    """Record the broker account created for a provider."""
    conn.execute(
        q("set_provider_mqtt"),
        {"provider_id": parse_uuid(provider_id, "provider"), "mqtt_username": mqtt_username},
    )


def get_provider(conn: psycopg.Connection, provider_id: str | uuid.UUID) -> dict[str, Any] | None:
    try:
        pid = uuid.UUID(str(provider_id))
    except ValueError:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q("get_provider"), {"provider_id": pid}).fetchone()


def webhook_secret(master: bytes, provider: dict[str, Any]) -> bytes:
    return crypto.decrypt(master, provider["webhook_secret_enc"])


def set_provider_status(
    conn: psycopg.Connection,
    provider_id: str,
    status: str,
    actor: str,
) -> dict[str, Any]:
    """Activate, suspend or remove a provider (its broker account follows in
    `ingest.providers.set_provider_status`)."""
    if status not in ("active", "suspended", "removed"):
        raise InputError("invalid_status", f"unknown provider status {status!r}")
    pid = parse_uuid(provider_id, "provider")
    provider = get_provider(conn, pid)
    if provider is None:
        raise NotFound("provider", provider_id)
    conn.execute(q("set_provider_status"), {"provider_id": pid, "status": status})
    audit(conn, actor, f"provider.{status}", provider_id=str(pid))
    return {"provider_id": str(pid), "status": status}


# Subjects and links ----------------------------------------------------------


def add_subject(
    conn: psycopg.Connection,
    residency: str,
    links: Sequence[tuple[str, str]],
    actor: str,
) -> dict[str, Any]:
    if residency not in RESIDENCIES:
        raise InputError("invalid_residency", f"residency must be FI or EU, not {residency!r}")
    subject_id = uuid.uuid4()
    conn.execute(q("insert_subject"), {"subject_id": subject_id, "residency": residency})
    audit(conn, actor, "subject.add", subject_id, residency=residency)
    for provider_id, user_ref in links:
        add_link(conn, subject_id, provider_id, user_ref, actor)
    return {"subject_id": str(subject_id)}


def add_link(
    conn: psycopg.Connection,
    subject_id: str | uuid.UUID,
    provider_id: str,
    user_ref: str,
    actor: str,
) -> None:
    sid = parse_uuid(subject_id, "subject")
    pid = parse_uuid(provider_id, "provider")
    if not user_ref or len(user_ref) > 256 or "\x00" in user_ref:
        raise InputError("invalid_link", "user ref must be 1-256 characters")
    if get_provider(conn, pid) is None:
        raise NotFound("provider", provider_id)
    try:
        with conn.transaction():
            conn.execute(
                q("insert_link"), {"provider_id": pid, "user_ref": user_ref, "subject_id": sid}
            )
    except psycopg.errors.UniqueViolation:
        raise InputError(
            "duplicate", "this provider's user ref is already linked to a subject"
        ) from None
    except psycopg.errors.ForeignKeyViolation:
        raise NotFound("subject", subject_id) from None
    audit(conn, actor, "link.add", sid, provider_id=str(pid))


def get_subject(conn: psycopg.Connection, subject_id: str | uuid.UUID) -> dict[str, Any]:
    sid = parse_uuid(subject_id, "subject")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("get_subject"), {"subject_id": sid}).fetchone()
        if row is None:
            raise NotFound("subject", subject_id)
        row["links"] = cur.execute(q("subject_links"), {"subject_id": sid}).fetchall()
    return row


# Consents --------------------------------------------------------------------


def grant_consent(
    conn: psycopg.Connection,
    subject_id: str,
    purpose: str,
    actor: str,
    provider_id: str | None = None,
    types: Sequence[str] | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> dict[str, Any]:
    if purpose not in PURPOSES:
        raise InputError("invalid_purpose", f"purpose must be one of {', '.join(PURPOSES)}")
    sid = parse_uuid(subject_id, "subject")
    pid = parse_uuid(provider_id, "provider") if provider_id else None
    checked = check_types(types) if types is not None else None
    for t in (valid_from, valid_until):
        if t is not None and t.tzinfo is None:
            raise InputError("invalid_time", "--from/--until need a UTC offset (e.g. Z)")
    if valid_from and valid_until and valid_from >= valid_until:
        raise InputError("invalid_time", "--from must be before --until")
    subject = conn.execute(q("lock_subject"), {"subject_id": sid}).fetchone()
    if subject is None:
        raise NotFound("subject", subject_id)
    if pid and get_provider(conn, pid) is None:
        raise NotFound("provider", provider_id)
    consent_id = uuid.uuid4()
    conn.execute(
        q("insert_consent"),
        {
            "consent_id": consent_id,
            "subject_id": sid,
            "purpose": purpose,
            "provider_id": pid,
            "types": checked,
            "valid_from": valid_from,
            "valid_until": valid_until,
            "actor": actor,
        },
    )
    audit(
        conn,
        actor,
        "consent.grant",
        sid,
        consent_id=str(consent_id),
        purpose=purpose,
        provider_id=str(pid) if pid else None,
        types=checked,
    )
    return {"consent_id": str(consent_id)}


def withdraw_consent(conn: psycopg.Connection, consent_id: str, actor: str) -> dict[str, Any]:
    """Effective for every reading committed after this transaction commits.

    Takes the subject's row lock first: a batch holding FOR SHARE on it commits
    before us; any batch that locks after us sees the withdrawal.

    Withdrawing a `location` consent also removes, in this transaction, the
    subject's stored coordinates that no other unwithdrawn location consent
    still covers (same provider or any, effective time in its [from, until)):
    such geoposition readings are deleted, coordinates inside other readings
    set to null. The counts go into the audit row and the result.
    """
    cid = parse_uuid(consent_id, "consent")
    row = conn.execute(q("consent_subject"), {"consent_id": cid}).fetchone()
    if row is None:
        raise NotFound("consent", consent_id)
    subject_id, withdrawn_at, purpose = row
    conn.execute(q("lock_subject"), {"subject_id": subject_id})
    removed: dict[str, int] = {}
    if withdrawn_at is None:
        withdrawn_at = conn.execute(
            q("insert_withdrawal"), {"consent_id": cid, "actor": actor}
        ).fetchone()[0]  # type: ignore[index]
        if purpose == "location":
            geo, coords = conn.execute(
                q("remove_uncovered_location"), {"subject_id": subject_id}
            ).fetchone()  # type: ignore[misc]
            removed = {"geoposition_readings_deleted": geo, "coordinates_cleared": coords}
        audit(conn, actor, "consent.withdraw", subject_id, consent_id=str(cid), **removed)
        # Research withdrawn: past exports holding the subject are queued for purge.
        conn.execute(q("queue_purge_research_withdrawn"), {"consent_id": cid})
    return {"consent_id": str(cid), "withdrawn_at": withdrawn_at.isoformat()} | removed


def consent_history(conn: psycopg.Connection, subject_id: str | uuid.UUID) -> list[dict[str, Any]]:
    sid = parse_uuid(subject_id, "subject")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q("consent_history"), {"subject_id": sid}).fetchall()


# Tokens ----------------------------------------------------------------------


def create_token(
    conn: psycopg.Connection,
    name: str,
    role: str,
    actor: str,
    expires_in_days: int = TOKEN_DAYS_DEFAULT,
) -> dict[str, str]:
    """A new bearer token (returned once, stored hashed) valid for `expires_in_days`."""
    if role not in ROLES:
        raise InputError("invalid_role", f"role must be one of {', '.join(ROLES)}")
    if not 1 <= expires_in_days <= TOKEN_DAYS_MAX:
        raise InputError(
            "invalid_expiry",
            f"a token expires in 1 to {TOKEN_DAYS_MAX} days, not {expires_in_days}",
        )
    token = "vt_" + secrets.token_urlsafe(32)
    row = conn.execute(
        q("insert_token"),
        {
            "token_hash": crypto.token_hash(token),
            "name": name,
            "role": role,
            "days": expires_in_days,
        },
    ).fetchone()
    assert row is not None
    expires_at: datetime = row[0]
    audit(conn, actor, "token.create", name=name, role=role, expires_at=expires_at.isoformat())
    return {"token": token, "name": name, "role": role, "expires_at": expires_at.isoformat()}


def token_role(conn: psycopg.Connection, token: str) -> tuple[str, str] | None:
    """(name, role) of an unrevoked, unexpired token; else None."""
    row = conn.execute(q("token_role"), {"token_hash": crypto.token_hash(token)}).fetchone()
    return (row[0], row[1]) if row else None


def revoke_token(conn: psycopg.Connection, token_id: str, actor: str) -> dict[str, Any]:
    """Revoke the token whose id is `token_id` (the hex of its hash, as listed by
    `store.reads.tokens`); revoking it again keeps the first time. NotFound for
    an unknown or malformed id."""
    token_id = token_id.lower()
    if len(token_id) != 64 or any(c not in "0123456789abcdef" for c in token_id):
        raise NotFound("token", token_id)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("revoke_token"), {"token_id": token_id}).fetchone()
    if row is None:
        raise NotFound("token", token_id)
    audit(conn, actor, "token.revoke", name=row["name"], role=row["role"])
    return row
