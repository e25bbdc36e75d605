"""Partners: who may receive audiences (purpose `marketing`) or readings
(purpose `disclosure`), their region and agreed types, and the notices owed
to them (GDPR Art. 19) when a person whose data they received is erased or
objects.

A person is named to a partner only by that partner's pseudonym
(`partner_pseudonym`): HMAC of the subject id under a key derived from the
master key for that partner (`core.crypto.partner_key`, never stored), so
it is stable for one partner and unlinkable between partners.

One transaction convention: every function takes a connection and runs in
its caller's transaction, never committing. Writers add an audit row. Bad
input raises `InputError` (`NotFound` for a missing partner).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core import crypto
from core.errors import InputError, NotFound
from core.outputs import pseudonym
from store.db import q
from store.registry import RESIDENCIES, audit, check_types, parse_uuid

PARTNER_PURPOSES = ("marketing", "disclosure")
NOTICE_KINDS = ("erasure", "objection")


def partner_pseudonym(master: bytes, partner_id: str | uuid.UUID, subject_id: Any) -> str:
    """How `partner_id` knows the subject: stable for it, different for every other."""
    return pseudonym(crypto.partner_key(master, partner_id), subject_id)


def check_purposes(purposes: Iterable[str]) -> list[str]:
    found = sorted({p.strip() for p in purposes if p.strip()}, key=_purpose_order)
    unknown = [p for p in found if p not in PARTNER_PURPOSES]
    if unknown:
        raise InputError(
            "invalid_purpose",
            f"a partner's purposes are {' and '.join(PARTNER_PURPOSES)}, not {', '.join(unknown)}",
        )
    if not found:
        raise InputError("invalid_purpose", "a partner needs at least one purpose")
    return found


def _purpose_order(p: str) -> int:
    return PARTNER_PURPOSES.index(p) if p in PARTNER_PURPOSES else len(PARTNER_PURPOSES)


def add_partner(
    conn: psycopg.Connection,
    name: str,
    region: str,
    purposes: Sequence[str],
    types: Sequence[str] | None,
    actor: str,
) -> dict[str, str]:
    """Register a partner; returns `{"partner_id"}`."""
    name = (name or "").strip()
    if not name or len(name) > 200 or "\x00" in name:
        raise InputError("invalid_name", "partner name must be 1-200 characters")
    if region not in RESIDENCIES:
        raise InputError("invalid_region", f"region must be FI or EU, not {region!r}")
    checked_purposes = check_purposes(purposes)
    checked_types = check_types(types) if types is not None else None
    partner_id = uuid.uuid4()
    try:
        with conn.transaction():
            conn.execute(
                q("partner_insert"),
                {
                    "partner_id": partner_id,
                    "name": name,
                    "region": region,
                    "purposes": checked_purposes,
                    "types": checked_types,
                    "actor": actor,
                },
            )
    except psycopg.errors.UniqueViolation:
        raise InputError("duplicate", f"a partner named {name!r} already exists") from None
    audit(
        conn,
        actor,
        "partner.add",
        partner_id=str(partner_id),
        region=region,
        purposes=checked_purposes,
        types=checked_types,
    )
    return {"partner_id": str(partner_id)}


def get_partner(conn: psycopg.Connection, partner_id: str | uuid.UUID) -> dict[str, Any]:
    """The partner, or NotFound."""
    pid = parse_uuid(partner_id, "partner")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("partner_get"), {"partner_id": pid}).fetchone()
    if row is None:
        raise NotFound("partner", partner_id)
    return row


def require_purpose(partner: dict[str, Any], purpose: str) -> None:
    """Refuse (`partner_purpose`) a partner not agreed for `purpose`."""
    if purpose not in partner["purposes"]:
        raise InputError(
            "partner_purpose",
            f"partner {partner['partner_id']} is not agreed for {purpose} "
            f"(its purposes: {', '.join(partner['purposes'])})",
        )


def list_partners(conn: psycopg.Connection, actor: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(q("partner_list")).fetchall()
    audit(conn, actor, "partner.list")
    return rows


def notices(conn: psycopg.Connection, partner_id: str, actor: str) -> list[dict[str, Any]]:
    """Every notice owed to the partner, oldest first (audited as a read)."""
    partner = get_partner(conn, partner_id)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(q("partner_notices"), {"partner_id": partner["partner_id"]}).fetchall()
    audit(conn, actor, "partner.notices", partner_id=str(partner["partner_id"]), count=len(rows))
    return rows


def add_notice(
    conn: psycopg.Connection,
    master: bytes,
    partner_id: Any,
    subject_id: Any,
    kind: str,
    *,
    purpose: str | None = None,
    objection_id: Any = None,
) -> bool:
    """Owe `partner_id` a notice about the subject (named by its pseudonym for
    that partner); False when that notice is already owed."""
    assert kind in NOTICE_KINDS
    row = conn.execute(
        q("partner_notice_insert"),
        {
            "partner_id": partner_id,
            "kind": kind,
            "pseudonym": partner_pseudonym(master, partner_id, subject_id),
            "purpose": purpose,
            "objection_id": objection_id,
        },
    ).fetchone()
    return row is not None
