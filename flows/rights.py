"""Data-subject rights: access extract, correction, erasure (resumable).

Plain functions over a connection or URL; the CLI and the admin API (role
`dpo`) call them, and every operation writes the audit log.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core import crypto
from core.errors import InputError, NotFound
from store import registry
from store.db import q, translate_errors

ERASURE_CHUNK = 50_000
_JSON_OPTS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def subject_hash(master: bytes, subject_id: str | uuid.UUID) -> str:
    """The keyed hash that replaces a subject id after erasure."""
    return registry.erased_subject_ref(master, subject_id)


def _default(obj: Any) -> Any:
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, memoryview | bytes):
        return None
    raise TypeError(type(obj).__name__)


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=_JSON_OPTS)


# Access extract ---------------------------------------------------------------


def _rows(conn: psycopg.Connection, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q(name), params).fetchall()


def _stream(
    conn: psycopg.Connection, name: str, params: dict[str, Any], size: int = 5_000
) -> Iterator[dict[str, Any]]:
    """Server-side cursor: millions of rows in bounded memory."""
    with conn.cursor(name=f"extract_{uuid.uuid4().hex[:8]}", row_factory=dict_row) as cur:
        cur.itersize = size
        cur.execute(q(name), params)
        yield from cur


def write_extract(
    conn: psycopg.Connection, subject_id: str, out: IO[bytes], actor: str
) -> dict[str, int]:
    """Write one JSON document with everything held about the subject.

    Streams readings; returns counts per section. Audited as a read of
    personal data.
    """
    sid = registry.parse_uuid(subject_id, "subject")
    params = {"subject_id": sid}
    with translate_errors():
        subject = _rows(conn, "extract_subject", params)
        if not subject:
            raise NotFound("subject", subject_id)
        sections = {
            "links": _rows(conn, "subject_links", params),
            "consents": registry.consent_history(conn, str(sid)),
            "groups": _rows(conn, "extract_groups", params),
            "rejections": _rows(conn, "extract_rejections", params),
            "disclosures": _rows(conn, "extract_disclosures", params),
        }
        out.write(b'{"format":"vitals-subject-extract/1","subject":' + _dumps(subject[0]))
        for key, rows in sections.items():
            out.write(b',"' + key.encode() + b'":' + _dumps(rows))
        out.write(b',"readings":[')
        n = 0
        for row in _stream(conn, "extract_readings", params):
            out.write((b"," if n else b"") + _dumps(row))
            n += 1
        out.write(b"]}\n")
        counts = {k: len(v) for k, v in sections.items()} | {"readings": n}
        registry.audit(conn, actor, "subject.extract", sid, counts=counts)
        conn.commit()
    return counts


# Corrections ------------------------------------------------------------------


def correct_subject(
    conn: psycopg.Connection,
    subject_id: str,
    actor: str,
    *,
    residency: str | None = None,
    relationship_end: Any = None,
    clear_relationship_end: bool = False,
    add_links: Sequence[tuple[str, str]] = (),
    remove_links: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Change residency, relationship end or links; before/after in the audit log."""
    sid = registry.parse_uuid(subject_id, "subject")
    with translate_errors():
        before = registry.get_subject(conn, sid)
        conn.execute(q("lock_subject"), {"subject_id": sid})
        if residency is not None:
            if residency not in registry.RESIDENCIES:
                raise InputError("invalid_residency", "residency must be FI or EU")
            conn.execute(q("set_residency"), {"subject_id": sid, "residency": residency})
            # Now FI: past EU exports may no longer hold them (`vitals export purge`).
            conn.execute(q("queue_purge_residency"), {"subject_id": sid})
        if relationship_end is not None or clear_relationship_end:
            conn.execute(
                q("set_relationship_end"), {"subject_id": sid, "relationship_end": relationship_end}
            )
        for provider_id, user_ref in remove_links:
            pid = registry.parse_uuid(provider_id, "provider")
            if (
                conn.execute(
                    q("delete_link"), {"subject_id": sid, "provider_id": pid, "user_ref": user_ref}
                ).fetchone()
                is None
            ):
                raise InputError("not_found", "no such link on this subject")
        for provider_id, user_ref in add_links:
            registry.add_link(conn, sid, provider_id, user_ref, actor)
        after = registry.get_subject(conn, sid)
        registry.audit(
            conn,
            actor,
            "subject.correct",
            sid,
            before=orjson.loads(_dumps(before)),
            after=orjson.loads(_dumps(after)),
        )
        conn.commit()
    return orjson.loads(_dumps(after))


def correct_reading(
    conn: psycopg.Connection,
    subject_id: str,
    provider_id: str,
    reading_id: str,
    actor: str,
    *,
    action: str,
) -> dict[str, Any]:
    """`erroneous` (kept for the record, excluded from groups and exports),
    `valid` (undo that), or `delete`."""
    sid = registry.parse_uuid(subject_id, "subject")
    pid = registry.parse_uuid(provider_id, "provider")
    params = {"subject_id": sid, "provider_id": pid, "reading_id": reading_id}
    with translate_errors():
        if action == "delete":
            rows = conn.execute(q("delete_reading"), params).fetchall()
        elif action in ("erroneous", "valid"):
            rows = conn.execute(
                q("mark_reading_erroneous"), params | {"erroneous": action == "erroneous"}
            ).fetchall()
        else:
            raise InputError("invalid_action", "action must be erroneous, valid or delete")
        if not rows:
            raise NotFound("reading", reading_id)
        registry.audit(
            conn,
            actor,
            f"reading.{action}",
            sid,
            provider_id=str(pid),
            reading_id=reading_id,
            components=[r[0] for r in rows],
            before={"erroneous": action == "valid"} if action != "delete" else "stored",
            after={"erroneous": action == "erroneous"} if action != "delete" else "deleted",
        )
        conn.commit()
    return {"reading_id": reading_id, "action": action, "components": len(rows)}


# Erasure ----------------------------------------------------------------------

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

    with translate_errors(), psycopg.connect(url) as conn:
        conn.execute(q("erasure_export_lock"))
        receipt = conn.execute(q("erasure_receipt"), {"subject_hash": shash}).fetchone()
        exists = conn.execute(q("lock_subject"), {"subject_id": sid}).fetchone()
        if exists is None:
            conn.rollback()
            if receipt is not None and receipt[5] != "erasing":
                return _receipt(conn, shash, already=True)
            raise NotFound("subject", subject_id)
        conn.execute(q("erasure_begin"), {"subject_id": sid, "subject_hash": shash, "actor": actor})
        conn.commit()
        step("begin")

        if pseudonym is None:
            from flows.export import pseudonym as export_pseudonym

            pseudonym = export_pseudonym
        for export_id, salt_enc in conn.execute(
            q("erasure_exports_of"), {"subject_id": sid}
        ).fetchall():
            conn.execute(
                q("erasure_queue_exports"),
                {
                    "export_id": export_id,
                    "subject_id": sid,
                    "pseudonym": pseudonym(crypto.decrypt(master, salt_enc), str(sid)),
                    "subject_hash": shash,
                },
            )
        conn.commit()
        step("queue_exports")

        while True:
            with conn.transaction():
                conn.execute(q("lock_subject"), {"subject_id": sid})
                n = conn.execute(
                    q("erasure_delete_readings"), {"subject_id": sid, "chunk": ERASURE_CHUNK}
                ).rowcount
                conn.execute(
                    q("erasure_add_counts"),
                    {"subject_hash": shash, "counts": Jsonb({"readings": n})},
                )
            if n < ERASURE_CHUNK:
                break
        _refresh_aggregates(url, conn)
        step("readings")

        with conn.transaction():
            conn.execute(q("lock_subject"), {"subject_id": sid})
            conn.execute("SET LOCAL vitals.erasure = 'on'")
            cur = conn.cursor(row_factory=dict_row)
            counts = cur.execute(q("erasure_delete_rest"), {"subject_id": sid}).fetchone() or {}
            counts |= (
                cur.execute(q("erasure_delete_consents"), {"subject_id": sid}).fetchone() or {}
            )
            conn.execute(q("erasure_add_counts"), {"subject_hash": shash, "counts": Jsonb(counts)})
        step("rest")

        pseudonymise_audit(conn, master, sid, shash)
        conn.commit()
        step("audit")

        # The last step locks the subject like every other: a batch holding FOR
        # SHARE commits first, and the rejections it recorded with the subject id
        # go with the subject; audit rows written meanwhile are pseudonymised.
        conn.execute(q("lock_subject"), {"subject_id": sid})
        late = conn.execute(q("erasure_delete_late_rejections"), {"subject_id": sid}).rowcount
        if late:
            conn.execute(
                q("erasure_add_counts"),
                {"subject_hash": shash, "counts": Jsonb({"rejections": late})},
            )
        pseudonymise_audit(conn, master, sid, shash)
        conn.execute(q("erasure_finish"), {"subject_id": sid, "subject_hash": shash})
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


def pseudonymise_audit(conn: psycopg.Connection, master: bytes, sid: uuid.UUID, shash: str) -> int:
    """Pseudonymise every audit entry naming the subject, in the caller's
    transaction. Entries about the subject (subject_ref in any form) are
    scrubbed; any other entry mentioning the id gets the hash in its place.
    Scans the whole log (erasure is rare; the log is append-only). Idempotent."""
    pattern = _id_pattern(sid)
    found = re.compile(pattern, re.IGNORECASE)
    rows = conn.execute(q("erasure_audit_entries"), {"pattern": pattern}).fetchall()
    for audit_id, subject_ref, detail in rows:
        if subject_ref is not None and found.search(subject_ref):
            subject_ref, detail = shash, _scrub(master, detail)
        text = found.sub(shash, orjson.dumps(detail).decode())
        conn.execute(
            q("erasure_audit_update"),
            {"audit_id": audit_id, "subject_ref": subject_ref, "detail": Jsonb(orjson.loads(text))},
        )
    return len(rows)


def _refresh_aggregates(url: str, conn: psycopg.Connection) -> None:
    """With TimescaleDB, refresh the continuous aggregates over readings now, so
    the erased subject's daily totals go with the readings (refresh only redoes
    invalidated buckets; it cannot run inside a transaction)."""
    if not conn.execute(q("timescaledb_present")).fetchone()[0]:  # type: ignore[index]
        return
    views = [r[0] for r in conn.execute(q("erasure_continuous_aggregates")).fetchall()]
    as_owner = conn.execute(q("aggregate_refresh_role")).fetchone()[0]  # type: ignore[index]
    conn.commit()
    with psycopg.connect(url, autocommit=True) as refresher:
        if as_owner:  # only the owner may refresh; vitals_app acts as it (0007)
            refresher.execute("SET ROLE vitals_aggregates")
        for view in views:
            refresher.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (view,))


def _receipt(conn: psycopg.Connection, shash: str, *, already: bool) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("erasure_receipt"), {"subject_hash": shash}).fetchone()
    assert row is not None
    return orjson.loads(_dumps(row)) | {"already_erased": already}
