"""Erasure: the subject erased everywhere in the database, idempotent and
resumable, its past exports queued for the purge (`rights.purge`), its audit
entries pseudonymised."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from core import crypto
from core.errors import NotFound
from core.outputs import pseudonym as export_pseudonym
from rights.encode import plain
from store import disclosures, objections, registry
from store import rights as queries
from store.db import Connection, connect, translate_errors

ERASURE_CHUNK = 50_000


def subject_hash(master: bytes, subject_id: str | uuid.UUID) -> str:
    """The keyed hash that replaces a subject id after erasure."""
    return registry.erased_subject_ref(master, subject_id)


ERASURE_STEPS = ("begin", "queue_exports", "readings", "rest", "audit", "finish")


def erase_subject(
    url: str,
    master: bytes,
    subject_id: str,
    actor: str,
    *,
    pseudonym: Callable[[bytes, str], str] | None = None,
    crash_after: str | None = None,
) -> dict[str, Any]:
    """Erase a subject everywhere in the database; idempotent and resumable.

    Each step commits on its own; a re-run after a crash (or `crash_after`, for
    tests) continues where the last one stopped. Past exports are queued for
    `vitals export purge` by pseudonym; the receipt's status is
    'pending_purge' until that purge has rewritten every one of them, then
    'complete' (with `completed_at`). The first step waits for running exports
    to commit (`erasure_export_lock`), so none can take the subject after it.
    """
    sid = registry.parse_uuid(subject_id, "subject")
    shash = subject_hash(master, sid)

    def step(name: str) -> None:
        if crash_after == name:
            raise RuntimeError(f"injected crash after erasure step {name!r}")

    with translate_errors(), connect(url) as conn:
        queries.erasure_export_lock(conn)
        receipt = queries.erasure_receipt(conn, shash)
        if not queries.lock_subject(conn, sid):
            conn.rollback()
            if receipt is not None and receipt["status"] != "erasing":
                return _receipt(conn, shash, already=True)
            raise NotFound("subject", subject_id)
        queries.erasure_begin(conn, sid, shash, actor)
        conn.commit()
        step("begin")

        if pseudonym is None:
            pseudonym = export_pseudonym
        for export_id, salt_enc in queries.erasure_exports_of(conn, sid):
            queries.erasure_queue_export(
                conn, export_id, sid, pseudonym(crypto.decrypt(master, salt_enc), str(sid)), shash
            )
        conn.commit()
        step("queue_exports")

        while True:
            with conn.transaction():
                queries.lock_subject(conn, sid)
                n = queries.erasure_delete_readings(conn, sid, ERASURE_CHUNK)
                queries.erasure_add_counts(conn, shash, {"readings": n})
            if n < ERASURE_CHUNK:
                break
        _refresh_aggregates(url, conn)
        step("readings")

        with conn.transaction():
            queries.lock_subject(conn, sid)
            counts = queries.erasure_delete_rest(conn, sid)
            counts |= objections.erase(conn, sid)
            counts |= disclosures.on_erasure(conn, master, sid, shash)
            queries.erasure_add_counts(conn, shash, counts)
        step("rest")

        _pseudonymise_audit(conn, master, sid, shash)
        conn.commit()
        step("audit")

        # The last step locks the subject like every other: a batch holding FOR
        # SHARE commits first, and the rejections it recorded with the subject id
        # go with the subject; audit rows written meanwhile are pseudonymised.
        queries.lock_subject(conn, sid)
        late = queries.erasure_delete_late_rejections(conn, sid)
        if late:
            queries.erasure_add_counts(conn, shash, {"rejections": late})
        _pseudonymise_audit(conn, master, sid, shash)
        queries.erasure_finish(conn, sid, shash)
        registry.audit(conn, actor, "subject.erase", shash)
        conn.commit()
        return _receipt(conn, shash, already=False)


# Audit entries of an erased subject keep what was done, when and by whom, but
# nothing that points back at the person: the subject id in any case or format
# becomes its keyed hash, the ids of the subject's readings become keyed hashes
# (and the provider id beside them goes), values before/after a correction and
# any user refs or links are dropped.
_REDACT_KEYS = frozenset({"before", "after", "user_ref", "user_refs", "links"})


def _id_pattern(sid: uuid.UUID) -> str:
    """A regular expression (POSIX and Python alike) for the subject id in any
    case, with or without its hyphens (also inside braces or a urn:uuid:)."""
    h = sid.hex
    return "-?".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))


def _reading_hash(master: bytes, provider_id: object, reading_id: object) -> str:
    return "erased:" + crypto.keyed_hash(master, "erasure-reading", f"{provider_id}:{reading_id}")


def _scrub(master: bytes, detail: dict[str, Any]) -> dict[str, Any]:
    """The detail of an entry about the erased subject, pseudonymised."""
    out = {k: v for k, v in detail.items() if k not in _REDACT_KEYS}
    if "reading_id" in out:
        out["reading_id"] = _reading_hash(master, out.pop("provider_id", None), out["reading_id"])
    if len(out) < len(detail) and not {"before", "after"}.isdisjoint(detail):
        out["redacted"] = "erasure"
    return out


def _pseudonymise_audit(conn: Connection, master: bytes, sid: uuid.UUID, shash: str) -> int:
    """Pseudonymise every audit entry naming the subject, in the caller's
    transaction. Entries about the subject (subject_ref in any form) are
    scrubbed; any other entry mentioning the id gets the hash in its place.
    Scans the whole log (erasure is rare; the log is append-only). Idempotent."""
    pattern = _id_pattern(sid)
    found = re.compile(pattern, re.IGNORECASE)
    rows = queries.audit_entries_matching(conn, pattern)
    for audit_id, subject_ref, detail in rows:
        if subject_ref is not None and found.search(subject_ref):
            subject_ref, detail = shash, _scrub(master, detail)
        text = found.sub(shash, orjson.dumps(detail).decode())
        queries.audit_entry_update(conn, audit_id, subject_ref, orjson.loads(text))
    return len(rows)


def _refresh_aggregates(url: str, conn: Connection) -> None:
    """With TimescaleDB, refresh the continuous aggregates over readings now, so
    the erased subject's daily totals go with the readings (refresh only redoes
    invalidated buckets; it cannot run inside a transaction)."""
    found = queries.continuous_aggregates(conn)
    if found is None:
        return
    conn.commit()
    queries.refresh_aggregates(url, *found)


def _receipt(conn: Connection, shash: str, *, already: bool) -> dict[str, Any]:
    row = queries.erasure_receipt(conn, shash)
    assert row is not None
    return plain(row) | {"already_erased": already}
