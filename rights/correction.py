"""Corrections: a subject's residency, relationship end and links; a reading
marked erroneous, valid again, or deleted. Before and after go to the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.errors import InputError, NotFound
from rights.encode import plain
from store import registry
from store import rights as queries
from store.db import Connection, translate_errors


def correct_subject(
    conn: Connection,
    subject_id: str,
    actor: str,
    *,
    residency: str | None = None,
    relationship_end: Any = None,
    clear_relationship_end: bool = False,
    add_links: Sequence[tuple[str, str]] = (),
    remove_links: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Change residency, relationship end or links; before/after in the audit
    log. Commits on `conn`."""
    sid = registry.parse_uuid(subject_id, "subject")
    with translate_errors():
        before = registry.get_subject(conn, sid)
        queries.lock_subject(conn, sid)
        if residency is not None:
            if residency not in registry.RESIDENCIES:
                raise InputError("invalid_residency", "residency must be FI or EU")
            # Now FI: past EU exports may no longer hold them (`vitals export purge`).
            queries.set_residency(conn, sid, residency)
        if relationship_end is not None or clear_relationship_end:
            queries.set_relationship_end(conn, sid, relationship_end)
        for provider_id, user_ref in remove_links:
            pid = registry.parse_uuid(provider_id, "provider")
            if not queries.delete_link(conn, sid, pid, user_ref):
                raise InputError("not_found", "no such link on this subject")
        for provider_id, user_ref in add_links:
            registry.add_link(conn, sid, provider_id, user_ref, actor)
        after = registry.get_subject(conn, sid)
        registry.audit(
            conn,
            actor,
            "subject.correct",
            sid,
            before=plain(before),
            after=plain(after),
        )
        conn.commit()
    return plain(after)


def correct_reading(
    conn: Connection,
    subject_id: str,
    provider_id: str,
    reading_id: str,
    actor: str,
    *,
    action: str,
) -> dict[str, Any]:
    """`erroneous` (kept for the record, excluded from groups and exports),
    `valid` (undo that), or `delete`. Commits on `conn`."""
    sid = registry.parse_uuid(subject_id, "subject")
    pid = registry.parse_uuid(provider_id, "provider")
    with translate_errors():
        if action == "delete":
            components = queries.delete_reading(conn, sid, pid, reading_id)
        elif action in ("erroneous", "valid"):
            components = queries.mark_reading_erroneous(
                conn, sid, pid, reading_id, action == "erroneous"
            )
        else:
            raise InputError("invalid_action", "action must be erroneous, valid or delete")
        if not components:
            raise NotFound("reading", reading_id)
        registry.audit(
            conn,
            actor,
            f"reading.{action}",
            sid,
            provider_id=str(pid),
            reading_id=reading_id,
            components=components,
            before={"erroneous": action == "valid"} if action != "delete" else "stored",
            after={"erroneous": action == "erroneous"} if action != "delete" else "deleted",
        )
        conn.commit()
    return {"reading_id": reading_id, "action": action, "components": len(components)}
