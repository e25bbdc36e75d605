"""The export queries: the erasure lock, the snapshot, the subjects, the COPY
streams and the record of what was disclosed.

The steps of an export (pseudonyms, Parquet files, the manifest, the rename
into place) live in `flows.export`; the SQL it runs is here.

One transaction convention: `export_snapshot` owns its connection and its one
REPEATABLE READ transaction; every other function takes that connection and
runs in the caller's transaction, never committing.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from store.db import q, translate_errors


@contextlib.contextmanager
def export_snapshot(database_url: str) -> Iterator[tuple[psycopg.Connection, datetime]]:
    """Owns its connection: yields (connection, cut-off) inside one REPEATABLE
    READ transaction whose start is the cut-off, with the export's temp tables.

    The shared erasure lock is taken and committed before the snapshot (a
    waiting export sees whatever the erasure it waited for committed) and
    released only after the transaction commits; the block leaving with an
    exception rolls back. Driver errors become StorageUnavailable/StorageError.
    """
    with translate_errors(), psycopg.connect(database_url) as conn:
        conn.execute(q("export_erasure_lock_shared"))
        conn.commit()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            conn.execute(q("export_work_mem"))
            cutoff: datetime = conn.execute(q("export_cutoff")).fetchone()[0]  # type: ignore[index]
            conn.execute(q("export_create_temp"))
            yield conn, cutoff.astimezone(UTC)
        conn.execute(q("export_erasure_unlock_shared"))
        conn.commit()


def eligible_subjects(conn: psycopg.Connection, cutoff: datetime, region: str) -> list[uuid.UUID]:
    """Subjects whose research consent lets them go to `region` at the cut-off
    (kept in the temp table the readings and groups queries read), sorted."""
    conn.execute(q("export_consents"), {"cutoff": cutoff, "region": region})
    return [r[0] for r in conn.execute(q("export_subject_ids")).fetchall()]


def load_pseudonyms(conn: psycopg.Connection, by_pseudonym: Mapping[str, uuid.UUID]) -> None:
    """Fill the export's pseudonym map (temp table) from pseudonym -> subject."""
    with conn.cursor() as cur, cur.copy(q("export_copy_map")) as cp:
        for p, sid in by_pseudonym.items():
            cp.write_row((sid, p))


@contextlib.contextmanager
def readings_csv(conn: psycopg.Connection, cutoff: datetime) -> Iterator[Iterator[Any]]:
    """The exported readings as CSV chunks of a COPY ... TO STDOUT (columns:
    pseudonym, type, component, epoch microseconds, value, unit, UTC date),
    ordered by type and time. Streamed: read them before the block ends."""
    with conn.cursor() as cur, cur.copy(q("export_readings"), {"cutoff": cutoff}) as copy:
        yield iter(copy)


@contextlib.contextmanager
def group_memberships(
    conn: psycopg.Connection,
    cutoff: datetime,
    evidence_types: Mapping[str, Any],
    batch_rows: int = 10_000,
) -> Iterator[Iterator[list[tuple[Any, ...]]]]:
    """Memberships the export may show, in batches of rows (pseudonym,
    group_key, rule_version, valid_from, valid_until, evidence JSON text),
    through a server-side cursor: bounded memory. `evidence_types` maps each
    evidence key to its reading types ([] for none, None for every type)."""
    with conn.cursor(name="export_groups") as cur:
        cur.execute(
            q("export_groups"), {"cutoff": cutoff, "evidence_types": Jsonb(dict(evidence_types))}
        )
        yield iter(lambda: cur.fetchmany(batch_rows), [])


def record_export(
    conn: psycopg.Connection,
    *,
    export_id: str,
    region: str,
    cutoff: datetime,
    salt_enc: bytes,
    path: str,
    row_count: int,
    actor: str,
    subjects: Sequence[uuid.UUID],
) -> None:
    """Record the export and the subjects it disclosed (caller commits)."""
    conn.execute(
        q("export_insert"),
        {
            "export_id": export_id,
            "region": region,
            "cutoff": cutoff,
            "salt_enc": salt_enc,
            "path": path,
            "subject_count": len(subjects),
            "row_count": row_count,
            "actor": actor,
        },
    )
    with conn.cursor() as cur, cur.copy(q("export_copy_subjects")) as cp:
        for sid in subjects:
            cp.write_row((export_id, sid))


def encrypted_salt(conn: psycopg.Connection, export_id: str) -> bytes | None:
    """The export's salt as stored (encrypted); None if there is no such export."""
    row = conn.execute(q("export_salt"), {"export_id": export_id}).fetchone()
    return None if row is None else row[0]
