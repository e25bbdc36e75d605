"""Objections: a person's prohibition of a purpose (`marketing`, `research`,
`disclosure`, the last optionally for one partner), append-only like
consents (sql/migrations/0008: objections + objection_lifts, guarded by the
vitals_append_only trigger; only erasure deletes).

An objection beats every consent of its purpose for every flow run that
starts after it commits: the flows read objections in their snapshot
(sql/queries/audiences.sql, disclosures.sql, statistics.sql, export.sql).
An objection that concerns data a partner already received owes that partner
a notice (GDPR Art. 19, `store.partners.add_notice`). A research objection
queues past exports holding the person for purge, as a research withdrawal does.

One transaction convention: every function takes a connection and runs in
its caller's transaction, never committing. Writers add an audit row.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.errors import InputError, NotFound
from store import partners
from store.db import q
from store.registry import audit, parse_uuid

OBJECTION_PURPOSES = ("marketing", "research", "disclosure")


def add_objection(
    conn: psycopg.Connection,
    master: bytes,
    subject_id: str,
    purpose: str,
    actor: str,
    partner_id: str | None = None,
) -> dict[str, str]:
    """Record an objection; returns `{"objection_id"}`.

    Takes the subject's row lock (as consents do), so an erasure or a consent
    change of the same person serialises with it. Partners that already
    received data the objection concerns are owed a notice.
    """
    if purpose not in OBJECTION_PURPOSES:
        raise InputError(
            "invalid_purpose", f"an objection's purpose is one of {', '.join(OBJECTION_PURPOSES)}"
        )
    if partner_id is not None and purpose != "disclosure":
        raise InputError("invalid_partner", "--partner goes with a disclosure objection only")
    sid = parse_uuid(subject_id, "subject")
    if conn.execute(q("lock_subject"), {"subject_id": sid}).fetchone() is None:
        raise NotFound("subject", subject_id)
    pid = partners.get_partner(conn, partner_id)["partner_id"] if partner_id else None
    objection_id = uuid.uuid4()
    conn.execute(
        q("objection_insert"),
        {
            "objection_id": objection_id,
            "subject_id": sid,
            "purpose": purpose,
            "partner_id": pid,
            "actor": actor,
        },
    )
    if purpose == "research":
        conn.execute(q("objection_queue_purge_research"), {"subject_id": sid})
    notified = [
        str(p)
        for (p,) in conn.execute(
            q("objection_partners_to_notify"),
            {"subject_id": sid, "purpose": purpose, "partner_id": pid},
        ).fetchall()
        if partners.add_notice(
            conn, master, p, sid, "objection", purpose=purpose, objection_id=objection_id
        )
    ]
    audit(
        conn,
        actor,
        "objection.add",
        sid,
        objection_id=str(objection_id),
        purpose=purpose,
        partner_id=str(pid) if pid else None,
        partners_notified=notified,
    )
    return {"objection_id": str(objection_id)}


def lift_objection(conn: psycopg.Connection, objection_id: str, actor: str) -> dict[str, Any]:
    """Lift an objection (another append-only row); lifting again changes nothing."""
    oid = parse_uuid(objection_id, "objection")
    row = conn.execute(q("objection_subject"), {"objection_id": oid}).fetchone()
    if row is None:
        raise NotFound("objection", objection_id)
    subject_id, purpose, _partner, lifted_at = row
    conn.execute(q("lock_subject"), {"subject_id": subject_id})
    if lifted_at is None:
        lifted_at = conn.execute(
            q("objection_lift_insert"), {"objection_id": oid, "actor": actor}
        ).fetchone()[0]  # type: ignore[index]
        audit(conn, actor, "objection.lift", subject_id, objection_id=str(oid), purpose=purpose)
    return {"objection_id": str(oid), "lifted_at": lifted_at.isoformat()}


def extract_rows(conn: psycopg.Connection, subject_id: uuid.UUID) -> list[dict[str, Any]]:
    """The subject's objection history (objections and lifts) for the access extract."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q("objection_history"), {"subject_id": subject_id}).fetchall()


def erase(conn: psycopg.Connection, subject_id: uuid.UUID) -> dict[str, int]:
    """Delete the subject's objections and lifts (erasure only; the flag is
    local to the caller's transaction); returns counts."""
    conn.execute(q("objection_erasure_flag"))
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("objection_erase"), {"subject_id": subject_id}).fetchone()
    return dict(row or {})
