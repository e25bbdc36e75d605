"""The retention queries: TimescaleDB chunk drops and chunked DELETEs.

What is outdated (maximum ages per type, the relationship grace period) and
the run's report live in `flows.retention`; the SQL it runs is here.

One transaction convention: every function takes a connection in autocommit
mode. The `delete_*` functions own their transactions: each chunk of at most
`chunk` rows is deleted and committed on its own, until a chunk comes back
short, so a large backlog never holds long locks or a huge transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from store.db import q


def _drain(conn: psycopg.Connection, name: str, params: dict[str, Any]) -> int:
    """Run a chunked DELETE until it removes less than a chunk; returns rows removed."""
    query = q(name)
    total = 0
    while True:
        with conn.transaction():
            n = conn.execute(query, params).rowcount
        total += n
        if n < params["chunk"]:
            return total


def has_timescale(conn: psycopg.Connection) -> bool:
    return bool(conn.execute(q("retention_has_timescale")).fetchone()[0])  # type: ignore[index]


def drop_reading_chunks(conn: psycopg.Connection, before: datetime) -> int:
    """TimescaleDB: drop whole readings chunks older than `before`; returns how many."""
    row = conn.execute(q("retention_drop_chunks"), {"before": before}).fetchone()
    return int(row[0]) if row else 0


def delete_readings_of_types(
    conn: psycopg.Connection, types: Sequence[str], before: datetime, chunk: int
) -> int:
    """Readings of `types` older than `before`; returns rows removed."""
    return _drain(
        conn,
        "retention_readings_of_types",
        {"types": list(types), "before": before, "chunk": chunk},
    )


def delete_readings_of_other_types(
    conn: psycopg.Connection, types: Sequence[str], before: datetime, chunk: int
) -> int:
    """Readings of every type not in `types` older than `before`; returns rows removed."""
    return _drain(
        conn,
        "retention_readings_of_other_types",
        {"types": list(types), "before": before, "chunk": chunk},
    )


def subjects_ended_before(conn: psycopg.Connection, before: datetime) -> list[uuid.UUID]:
    """Subjects whose relationship ended before `before`, sorted."""
    return [r[0] for r in conn.execute(q("retention_ended_subjects"), {"before": before})]


def delete_readings_of_subjects(
    conn: psycopg.Connection, subjects: Sequence[uuid.UUID], chunk: int
) -> int:
    return _drain(
        conn, "retention_readings_of_subjects", {"subjects": list(subjects), "chunk": chunk}
    )


def delete_rejections(
    conn: psycopg.Connection, before: datetime, subjects: Sequence[uuid.UUID], chunk: int
) -> int:
    """Rejections received before `before`, and every rejection of `subjects`."""
    return _drain(
        conn,
        "retention_rejections",
        {"before": before, "subjects": list(subjects), "chunk": chunk},
    )


def delete_group_memberships(
    conn: psycopg.Connection, before: datetime, subjects: Sequence[uuid.UUID], chunk: int
) -> int:
    """Memberships that ended before `before`, and every membership of `subjects`."""
    return _drain(
        conn,
        "retention_groups",
        {"before": before, "subjects": list(subjects), "chunk": chunk},
    )
