"""store.demo, the demo's queries, against real PostgreSQL."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from schemas.reading import Component, Reading, Refusal
from store import demo as demo_store
from store.writer import Writer
from tests.support import seed

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


def hr(rid: str, user: str) -> Reading:
    return Reading(
        rid, user, "heart-rate", NOW, (Component("heart_rate", 71, "/min", 71, "beats/min"),)
    )


def test_reachable(pg_server_url: str) -> None:
    assert demo_store.reachable(pg_server_url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not demo_store.reachable(f"postgresql://postgres@127.0.0.1:{port}/postgres")


def test_recreate_database_leaves_it_empty(pg_server_url: str) -> None:
    name = f"vitals_demo_t_{uuid.uuid4().hex[:10]}"
    try:
        url = demo_store.recreate_database(pg_server_url, name)
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE left_over (x int)")
        with psycopg.connect(url) as conn:  # an open session is forced off
            url = demo_store.recreate_database(pg_server_url, name)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('left_over')").fetchone() == (None,)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_settled_and_report_counts(
    db_url: str, writer: Writer, conn: psycopg.Connection, master_key: bytes
) -> None:
    assert demo_store.settled(db_url) == 0
    p = seed.provider(conn, master_key, ("heart-rate",))["provider_id"]
    sid = seed.subject(conn, p, "alice")
    seed.consent(conn, sid, provider_id=p, types=["heart-rate"])
    since = datetime.now(UTC) - timedelta(seconds=5)
    items = [
        (p, hr("a", "alice")),
        (p, Refusal("bad", "invalid_schema", "body.heart_rate missing")),
        (p, hr("b", "bob")),
        (p, hr("a", "alice")),
    ]
    writer.write(items, "test")
    assert demo_store.settled(db_url) == 3  # one stored, two refused, the duplicate not
    counts = demo_store.report_counts(db_url, since)
    assert counts["accepted"] == 1
    assert counts["refused_by_reason"] == {"invalid_schema": 1, "unknown_subject": 1}
    assert counts["refused_by_transport"] == {"test": 2}
    assert counts["groups"] == {}
    assert [n for _, n in counts["stored_per_second"]] == [1]
    assert sum(counts["refused_per_second"].values()) == 2
    assert all(b >= since - timedelta(seconds=1) for b in counts["refused_per_second"])


@pytest.mark.parametrize("path", ["/tmp/x/exports/abc", "relative/export"])
def test_duckdb_query_is_one_line_on_the_export(path: str) -> None:
    assert demo_store.duckdb_export_summary(path) == (
        "SELECT type, component, unit, count(*) AS n, round(avg(value), 1) AS mean "
        f"FROM read_parquet('{path}/readings/*/*/*.parquet', hive_partitioning=false) "
        "GROUP BY ALL ORDER BY n DESC"
    )
