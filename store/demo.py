"""The database side of `vitals demo` (sql/queries/demo.sql).

A fresh database on a local server, whether every reading the simulator sent
has been committed or refused, and the counts of the demo's report; the
package `demo` runs them and never imports the driver.

One transaction convention: every function takes a URL and owns its
connection and transaction, leaving nothing open for the caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from store.db import q, translate_errors


def reachable(url: str, timeout: int = 2) -> bool:
    """Whether the PostgreSQL server at `url` accepts a connection within `timeout` s."""
    try:
        with psycopg.connect(url, connect_timeout=timeout):
            return True
    except psycopg.OperationalError:
        return False


def recreate_database(server_url: str, name: str) -> str:
    """Drop the database `name` on the server at `server_url` (its sessions
    forced off) and create it empty; returns the URL of the new database."""
    db = sql.Identifier(name)
    with translate_errors(), psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL(q("demo_drop_database")).format(db=db))
        conn.execute(sql.SQL(q("demo_create_database")).format(db=db))
    return make_conninfo(server_url, dbname=name)


def settled(url: str) -> int:
    """Readings stored (one per provider reading id and time) plus readings refused."""
    with translate_errors(), psycopg.connect(url) as conn:
        row = conn.execute(q("demo_settled")).fetchone()
    return int(row[0]) if row else 0


def report_counts(url: str, since: datetime) -> dict[str, Any]:
    """What the demo's report counts, in one transaction: `accepted` readings,
    `refused_by_reason`, `refused_by_transport`, current `groups` (members per
    group key), and readings `stored_per_second` (a list of (bin, count)) and
    `refused_per_second` (bin -> count) in one-second bins from `since`."""
    with translate_errors(), psycopg.connect(url) as conn:
        accepted = conn.execute(q("demo_accepted")).fetchone()[0]  # type: ignore[index]
        by_reason: dict[str, int] = dict(conn.execute(q("demo_refused_by_reason")).fetchall())
        by_transport: dict[str, int] = dict(conn.execute(q("demo_refused_by_transport")).fetchall())
        groups: dict[str, int] = dict(conn.execute(q("demo_current_groups")).fetchall())
        stored = conn.execute(q("demo_stored_per_second"), {"t": since}).fetchall()
        refused: dict[datetime, int] = dict(
            conn.execute(q("demo_refused_per_second"), {"t": since}).fetchall()
        )
    return {
        "accepted": accepted,
        "refused_by_reason": by_reason,
        "refused_by_transport": by_transport,
        "groups": groups,
        "stored_per_second": [tuple(r) for r in stored],
        "refused_per_second": refused,
    }


def duckdb_export_summary(export_path: str) -> str:
    """The DuckDB query the report runs on an export (and shows the user, on one
    line): rows and mean value per type, component and unit."""
    template = " ".join(q("demo_duckdb_export_summary").split())
    return template.replace("{readings}", f"{export_path}/readings/*/*/*.parquet")
