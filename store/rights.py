"""The rights and purge queries: access extract, corrections, erasure, export purge.

The steps of those workflows (what commits when, files, pseudonyms, receipts)
live in `rights` (extract, correction, erasure, purge); the SQL they run is here.

One transaction convention: a function that takes a connection runs in its
caller's transaction and never commits; a function that takes a URL owns its
connection (`refresh_aggregates`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from store import registry
from store.db import connect, q


def _rows(conn: psycopg.Connection, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q(name), params).fetchall()


def lock_subject(conn: psycopg.Connection, subject_id: uuid.UUID) -> bool:
    """Lock the subject's row FOR UPDATE; False if there is no such subject."""
    return conn.execute(q("lock_subject"), {"subject_id": subject_id}).fetchone() is not None


# Access extract ---------------------------------------------------------------


def extract_subject(conn: psycopg.Connection, subject_id: uuid.UUID) -> dict[str, Any] | None:
    rows = _rows(conn, "extract_subject", {"subject_id": subject_id})
    return rows[0] if rows else None


def extract_sections(conn: psycopg.Connection, subject_id: uuid.UUID) -> dict[str, list[Any]]:
    """Everything held about the subject but the readings, section by section."""
    params = {"subject_id": subject_id}
    return {
        "links": _rows(conn, "subject_links", params),
        "consents": registry.consent_history(conn, str(subject_id)),
        "groups": _rows(conn, "extract_groups", params),
        "rejections": _rows(conn, "extract_rejections", params),
        "disclosures": _rows(conn, "extract_disclosures", params),
    }


def stream_readings(
    conn: psycopg.Connection, subject_id: uuid.UUID, size: int = 5_000, by_reading: bool = False
) -> Iterator[dict[str, Any]]:
    """The subject's readings through a server-side cursor: bounded memory.

    `by_reading`: the component rows of one reading come one after another
    (ordered by time, provider, reading id, component), for the FHIR extract.
    """
    name = "extract_readings_by_reading" if by_reading else "extract_readings"
    with conn.cursor(name=f"extract_{uuid.uuid4().hex[:8]}", row_factory=dict_row) as cur:
        cur.itersize = size
        cur.execute(q(name), {"subject_id": subject_id})
        yield from cur


# Corrections ------------------------------------------------------------------


def set_residency(conn: psycopg.Connection, subject_id: uuid.UUID, residency: str) -> None:
    """Change residency and queue the subject's past exports for purge (an FI
    resident may no longer be in an EU export)."""
    conn.execute(q("set_residency"), {"subject_id": subject_id, "residency": residency})
    conn.execute(q("queue_purge_residency"), {"subject_id": subject_id})


def set_relationship_end(
    conn: psycopg.Connection, subject_id: uuid.UUID, relationship_end: Any
) -> None:
    conn.execute(
        q("set_relationship_end"),
        {"subject_id": subject_id, "relationship_end": relationship_end},
    )


def delete_link(
    conn: psycopg.Connection, subject_id: uuid.UUID, provider_id: uuid.UUID, user_ref: str
) -> bool:
    """Remove one link of the subject; False if it has no such link."""
    params = {"subject_id": subject_id, "provider_id": provider_id, "user_ref": user_ref}
    return conn.execute(q("delete_link"), params).fetchone() is not None


def delete_reading(
    conn: psycopg.Connection, subject_id: uuid.UUID, provider_id: uuid.UUID, reading_id: str
) -> list[str]:
    """Delete a reading of the subject; returns the components deleted."""
    params = {"subject_id": subject_id, "provider_id": provider_id, "reading_id": reading_id}
    return [r[0] for r in conn.execute(q("delete_reading"), params).fetchall()]


def mark_reading_erroneous(
    conn: psycopg.Connection,
    subject_id: uuid.UUID,
    provider_id: uuid.UUID,
    reading_id: str,
    erroneous: bool,
) -> list[str]:
    """Mark a reading erroneous (or valid again); returns the components marked."""
    params = {
        "subject_id": subject_id,
        "provider_id": provider_id,
        "reading_id": reading_id,
        "erroneous": erroneous,
    }
    return [r[0] for r in conn.execute(q("mark_reading_erroneous"), params).fetchall()]


# Erasure ----------------------------------------------------------------------


def erasure_export_lock(conn: psycopg.Connection) -> None:
    """Wait for running exports to commit; none can take the subject after this."""
    conn.execute(q("erasure_export_lock"))


def erasure_receipt(conn: psycopg.Connection, subject_hash: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q("erasure_receipt"), {"subject_hash": subject_hash}).fetchone()


def erasure_begin(
    conn: psycopg.Connection, subject_id: uuid.UUID, subject_hash: str, actor: str
) -> None:
    conn.execute(
        q("erasure_begin"), {"subject_id": subject_id, "subject_hash": subject_hash, "actor": actor}
    )


def erasure_exports_of(conn: psycopg.Connection, subject_id: uuid.UUID) -> list[tuple[Any, bytes]]:
    """(export_id, encrypted salt) of every past export holding the subject."""
    rows = conn.execute(q("erasure_exports_of"), {"subject_id": subject_id}).fetchall()
    return [(r[0], r[1]) for r in rows]


def erasure_queue_export(
    conn: psycopg.Connection,
    export_id: Any,
    subject_id: uuid.UUID,
    pseudonym: str,
    subject_hash: str,
) -> None:
    conn.execute(
        q("erasure_queue_exports"),
        {
            "export_id": export_id,
            "subject_id": subject_id,
            "pseudonym": pseudonym,
            "subject_hash": subject_hash,
        },
    )


def erasure_delete_readings(conn: psycopg.Connection, subject_id: uuid.UUID, chunk: int) -> int:
    """Delete up to `chunk` of the subject's readings; returns how many."""
    return conn.execute(
        q("erasure_delete_readings"), {"subject_id": subject_id, "chunk": chunk}
    ).rowcount


def erasure_add_counts(conn: psycopg.Connection, subject_hash: str, counts: dict[str, Any]) -> None:
    conn.execute(q("erasure_add_counts"), {"subject_hash": subject_hash, "counts": Jsonb(counts)})


def erasure_delete_rest(conn: psycopg.Connection, subject_id: uuid.UUID) -> dict[str, Any]:
    """Delete everything else held about the subject, consents included (the
    erasure flag lets the append-only consent history go); returns counts."""
    conn.execute("SET LOCAL vitals.erasure = 'on'")
    with conn.cursor(row_factory=dict_row) as cur:
        counts = cur.execute(q("erasure_delete_rest"), {"subject_id": subject_id}).fetchone() or {}
        counts |= (
            cur.execute(q("erasure_delete_consents"), {"subject_id": subject_id}).fetchone() or {}
        )
    return counts


def erasure_delete_late_rejections(conn: psycopg.Connection, subject_id: uuid.UUID) -> int:
    return conn.execute(q("erasure_delete_late_rejections"), {"subject_id": subject_id}).rowcount


def erasure_finish(conn: psycopg.Connection, subject_id: uuid.UUID, subject_hash: str) -> None:
    conn.execute(q("erasure_finish"), {"subject_id": subject_id, "subject_hash": subject_hash})


def audit_entries_matching(conn: psycopg.Connection, pattern: str) -> list[tuple[Any, Any, Any]]:
    """(audit_id, subject_ref, detail) of every audit entry matching `pattern`."""
    rows = conn.execute(q("erasure_audit_entries"), {"pattern": pattern}).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def audit_entry_update(
    conn: psycopg.Connection, audit_id: Any, subject_ref: str | None, detail: dict[str, Any]
) -> None:
    conn.execute(
        q("erasure_audit_update"),
        {"audit_id": audit_id, "subject_ref": subject_ref, "detail": Jsonb(detail)},
    )


def continuous_aggregates(conn: psycopg.Connection) -> tuple[list[str], bool] | None:
    """With TimescaleDB, the continuous aggregates over readings and whether the
    app must act as their owner to refresh them; None without TimescaleDB."""
    if not conn.execute(q("timescaledb_present")).fetchone()[0]:  # type: ignore[index]
        return None
    views = [r[0] for r in conn.execute(q("erasure_continuous_aggregates")).fetchall()]
    as_owner = conn.execute(q("aggregate_refresh_role")).fetchone()[0]  # type: ignore[index]
    return views, bool(as_owner)


def refresh_aggregates(url: str, views: Sequence[str], as_owner: bool) -> None:
    """Refresh continuous aggregates now, on a connection of its own (refresh
    cannot run inside a transaction; it only redoes invalidated buckets)."""
    with connect(url, autocommit=True) as refresher:
        if as_owner:  # only the owner may refresh; vitals_app acts as it (0007)
            refresher.execute("SET ROLE vitals_aggregates")
        for view in views:
            refresher.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (view,))


# Export purge -----------------------------------------------------------------


def purge_lock(conn: psycopg.Connection) -> None:
    """One purge at a time: a session lock, released when the connection closes."""
    conn.execute(q("purge_lock"))


def purge_orphans(conn: psycopg.Connection) -> list[tuple[Any, Any, bytes]]:
    """(export_id, subject_id, encrypted salt) of disclosure-log rows whose
    subject no longer exists (an export that raced an erasure)."""
    return [(r[0], r[1], r[2]) for r in conn.execute(q("purge_orphans")).fetchall()]


def purge_queue_pseudonym(
    conn: psycopg.Connection, export_id: Any, pseudonym: str, subject_hash: str
) -> None:
    conn.execute(
        q("purge_queue_pseudonym"),
        {"export_id": export_id, "pseudonym": pseudonym, "subject_hash": subject_hash},
    )


def purge_forget_orphan(conn: psycopg.Connection, export_id: Any, subject_id: Any) -> None:
    conn.execute(q("purge_forget_orphan"), {"export_id": export_id, "subject_id": subject_id})


def purge_detect(conn: psycopg.Connection) -> None:
    """Queue subjects still in an export without research consent now, or FI
    residents in an EU export."""
    conn.execute(q("purge_detect"))


def purge_pending_count(conn: psycopg.Connection) -> tuple[int, int]:
    """(queued entries, exports with queued entries)."""
    entries, exports = conn.execute(q("purge_pending_count")).fetchone()  # type: ignore[misc]
    return entries, exports


def purge_exports_queued(conn: psycopg.Connection) -> list[tuple[Any, str, bytes]]:
    """(export_id, path, encrypted salt) of every export with queued entries."""
    return [(r[0], r[1], r[2]) for r in conn.execute(q("purge_exports")).fetchall()]


def purge_queued(conn: psycopg.Connection, export_id: Any) -> list[tuple[Any, Any, Any]]:
    """(queue_id, pseudonym, subject_id) queued for one export."""
    rows = conn.execute(q("purge_queued"), {"export_id": export_id}).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def purge_failed(conn: psycopg.Connection, queue_ids: list[Any], error: str) -> None:
    conn.execute(q("purge_failed"), {"queue_ids": queue_ids, "error": error})


def purge_done(
    conn: psycopg.Connection,
    export_id: Any,
    queue_ids: list[Any],
    subject_ids: list[Any],
    row_count: int,
) -> None:
    conn.execute(
        q("purge_done"),
        {
            "export_id": export_id,
            "queue_ids": queue_ids,
            "subject_ids": subject_ids,
            "row_count": row_count,
        },
    )


def purge_complete_receipts(conn: psycopg.Connection) -> None:
    """Erasure receipts with nothing left in the queue become `complete`."""
    conn.execute(q("purge_complete_receipts"))
