"""The audience queries: who may be marketed to, the member list, and the
record (for a partner, also the per-subject disclosure log).

The steps (group and partner checks, pseudonyms, the Parquet file, the
manifest) live in `flows.audience`; the SQL is in `sql/queries/audiences.sql`.
The flow runs in `store.exports.export_snapshot`.

One transaction convention: every function takes a connection and runs in
its caller's transaction, never committing.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime

import psycopg

from store.db import q


def select_members(
    conn: psycopg.Connection,
    cutoff: datetime,
    group: str,
    partner_id: uuid.UUID | None,
    region: str | None,
) -> int:
    """Find the members (kept in a temp table for the rest of the
    transaction); returns how many."""
    conn.execute(q("audience_create_temp"))
    params = {"cutoff": cutoff, "group": group, "partner_id": partner_id, "region": region}
    return conn.execute(q("audience_select"), params).rowcount


def name_members(
    conn: psycopg.Connection, name: Callable[[uuid.UUID], str], batch_rows: int = 10_000
) -> None:
    """Give every member its output name (`name(subject_id)`), in batches
    through a server-side cursor: bounded memory."""
    with conn.cursor(name="audience_ids") as cur:
        cur.execute(q("audience_subject_ids"))
        while batch := cur.fetchmany(batch_rows):
            with conn.cursor() as copy_cur, copy_cur.copy(q("audience_copy_map")) as cp:
                for (sid,) in batch:
                    cp.write_row((sid, name(sid)))


@contextlib.contextmanager
def members(conn: psycopg.Connection, batch_rows: int = 10_000) -> Iterator[Iterator[list[str]]]:
    """The members' names, sorted, in batches through a server-side cursor."""
    with conn.cursor(name="audience_members") as cur:
        cur.execute(q("audience_members"))
        yield iter(lambda: [r[0] for r in cur.fetchmany(batch_rows)], [])


def record_audience(
    conn: psycopg.Connection,
    *,
    audience_id: str,
    group: str,
    partner_id: uuid.UUID | None,
    cutoff: datetime,
    path: str,
    members: int,
    actor: str,
) -> None:
    """Record the audience; for a partner, log every member as disclosed."""
    params = {
        "audience_id": audience_id,
        "group": group,
        "partner_id": partner_id,
        "cutoff": cutoff,
        "path": path,
        "members": members,
        "actor": actor,
    }
    conn.execute(q("audience_insert"), params)
    if partner_id is not None:
        conn.execute(q("audience_log"), params)
