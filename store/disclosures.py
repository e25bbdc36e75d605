"""Disclosures to partners: the queries of the disclosure flow, the
per-subject log of everything partners received (readings and audiences),
and what erasure and late objections owe partners.

The steps (partner checks, pseudonyms, Parquet files, manifest) live in
`flows.disclosure`; the SQL is in `sql/queries/disclosures.sql`. The flows
run in `store.exports.export_snapshot` (one REPEATABLE READ transaction
holding the shared erasure lock), so an erasure waits for a running
disclosure and then finds it in the log.

One transaction convention: every function takes a connection and runs in
its caller's transaction, never committing.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from store import partners
from store.db import q


def eligible_subjects(
    conn: psycopg.Connection, partner_id: uuid.UUID, region: str, types: Sequence[str]
) -> list[uuid.UUID]:
    """Subjects whose readings of `types` may go to the partner, sorted; also
    creates the run's pseudonym map (temp table)."""
    conn.execute(q("disclosure_create_temp"))
    params = {"partner_id": partner_id, "region": region, "types": list(types)}
    return [r[0] for r in conn.execute(q("disclosure_subjects"), params).fetchall()]


def load_pseudonyms(conn: psycopg.Connection, by_subject: Mapping[uuid.UUID, str]) -> None:
    with conn.cursor() as cur, cur.copy(q("disclosure_copy_map")) as cp:
        for sid, p in by_subject.items():
            cp.write_row((sid, p))


@contextlib.contextmanager
def readings_csv(
    conn: psycopg.Connection, cutoff: datetime, types: Sequence[str]
) -> Iterator[Iterator[Any]]:
    """The disclosed readings as CSV chunks of a COPY ... TO STDOUT in the
    export's column order (`core.longformat`). Read them before the block ends."""
    params = {"cutoff": cutoff, "types": list(types)}
    with conn.cursor() as cur, cur.copy(q("disclosure_readings"), params) as copy:
        yield iter(copy)


def record_disclosure(
    conn: psycopg.Connection,
    *,
    disclosure_id: str,
    partner_id: uuid.UUID,
    types: Sequence[str],
    cutoff: datetime,
    path: str,
    row_count: int,
    actor: str,
) -> int:
    """Record the run and one log row per subject disclosed; returns subjects."""
    params = {
        "disclosure_id": disclosure_id,
        "partner_id": partner_id,
        "types": list(types),
        "cutoff": cutoff,
    }
    subjects = conn.execute(q("disclosure_log_readings"), params).rowcount
    conn.execute(
        q("disclosure_insert"),
        params | {"path": path, "subject_count": subjects, "row_count": row_count, "actor": actor},
    )
    return subjects


def notify_late_objections(conn: psycopg.Connection, master: bytes, disclosure_id: str) -> int:
    """After a disclosure or audience committed: objections its snapshot could
    not see, by people it went out with, owe the partner a notice. Returns
    notices added."""
    rows = conn.execute(q("disclosure_late_objections"), {"disclosure_id": disclosure_id})
    return sum(
        partners.add_notice(conn, master, pid, sid, "objection", purpose=purpose, objection_id=oid)
        for pid, sid, oid, purpose in rows.fetchall()
    )


def on_erasure(
    conn: psycopg.Connection, master: bytes, subject_id: uuid.UUID, subject_hash: str
) -> dict[str, int]:
    """Erasure: every partner that received the subject's data is owed an
    erasure notice (by its pseudonym), and the log keeps only the keyed hash
    `subject_hash` in place of the id. Idempotent (a re-run finds nothing)."""
    params = {"subject_id": subject_id, "subject_hash": subject_hash}
    found = [r[0] for r in conn.execute(q("disclosure_partners_of_subject"), params).fetchall()]
    notices = sum(partners.add_notice(conn, master, pid, subject_id, "erasure") for pid in found)
    logged = conn.execute(q("disclosure_log_pseudonymise"), params).rowcount
    return {"partner_disclosures": logged, "partner_notices": notices}


def extract_rows(conn: psycopg.Connection, subject_id: uuid.UUID) -> list[dict[str, Any]]:
    """What partners received of the subject, for the access extract."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q("disclosure_history"), {"subject_id": subject_id}).fetchall()
