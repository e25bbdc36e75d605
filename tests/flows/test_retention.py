"""Retention on real PostgreSQL: per-type age, relationship end + grace, bounded chunks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from flows.retention import run_retention
from tests.flows.helpers import Registry

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def count(conn: psycopg.Connection, sql: str, *params: object) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def test_retention_removes_what_is_past_its_age_and_reports_it(
    db_url: str, conn: psycopg.Connection, registry: Registry
) -> None:
    r = registry
    kept = r.subject()
    ended_long_ago = r.subject()
    ended_recently = r.subject()
    conn.execute(
        "UPDATE subjects SET status = 'ended', relationship_end = %s WHERE subject_id = %s",
        (ago(31), ended_long_ago.subject_id),
    )
    conn.execute(
        "UPDATE subjects SET status = 'ended', relationship_end = %s WHERE subject_id = %s",
        (ago(29), ended_recently.subject_id),
    )
    conn.commit()

    # Heart rate lives 30 days, everything else the default 365.
    r.readings(kept, "heart-rate", [(ago(d), 70) for d in (1, 29, 31, 40, 100)])  # 3 expire
    r.readings(kept, "blood-pressure", [(ago(d), (120, 80)) for d in (31, 364, 366)])  # 1 (2 rows)
    r.readings(kept, "step-count", [(ago(d), 1000) for d in range(360, 380)])  # 366..379: 14 expire
    r.readings(ended_long_ago, "heart-rate", [(ago(d), 70) for d in (1, 2, 3)])  # all 3
    r.readings(ended_long_ago, "body-weight", [(ago(d), 80) for d in (1, 2)])  # all 2
    r.readings(ended_recently, "heart-rate", [(ago(d), 70) for d in (1, 2)])  # kept

    for sid, received in (
        (kept.subject_id, ago(1)),
        (kept.subject_id, ago(400)),  # past the default age
        (ended_long_ago.subject_id, ago(1)),  # relationship ended
        (ended_recently.subject_id, ago(1)),
        (None, ago(500)),  # unknown subject, old
    ):
        conn.execute(
            "INSERT INTO rejections (provider_id, reading_id, subject_id, reason, transport,"
            " received_at) VALUES (%s, 'x', %s, 'no_consent', 'http', %s)",
            (r.provider_id, sid, received),
        )
    for sid, until in (
        (kept.subject_id, None),
        (kept.subject_id, ago(400)),  # ended long ago
        (kept.subject_id, ago(10)),
        (ended_long_ago.subject_id, None),
        (ended_recently.subject_id, None),
    ):
        conn.execute(
            "INSERT INTO group_memberships (subject_id, group_key, rule_version, evidence,"
            " valid_from, valid_until) VALUES (%s, %s, 'v1', '{}', %s, %s)",
            (sid, f"g{until}", ago(500), until),
        )
    conn.commit()
    before = count(conn, "SELECT count(*) FROM readings")

    result = run_retention(
        db_url,
        retention_days_default=365,
        retention_days={"heart-rate": 30},
        relationship_grace_days=30,
        now=NOW,
        chunk=4,  # many small chunks
    )

    assert result["readings_by_type"] == {"heart-rate": 3, "*": 2 + 14}
    assert result["readings_relationship_ended"] == 5
    assert result["readings"] == 3 + 16 + 5
    assert result["rejections"] == 3
    assert result["group_memberships"] == 2
    assert result["subjects_past_grace"] == 1
    assert result["timescale_chunks_dropped"] == 0

    assert count(conn, "SELECT count(*) FROM readings") == before - 24
    assert (
        count(
            conn, "SELECT count(*) FROM readings WHERE subject_id = %s", ended_long_ago.subject_id
        )
        == 0
    )
    assert (
        count(
            conn, "SELECT count(*) FROM readings WHERE subject_id = %s", ended_recently.subject_id
        )
        == 2
    )
    assert (
        count(
            conn,
            "SELECT count(*) FROM readings WHERE type = 'heart-rate' AND effective_time < %s",
            ago(30),
        )
        == 0
    )
    assert (
        count(
            conn,
            "SELECT count(*) FROM readings WHERE subject_id = %s AND type = 'step-count'",
            kept.subject_id,
        )
        == 6  # 360..365
    )
    assert count(conn, "SELECT count(*) FROM rejections") == 2
    assert count(conn, "SELECT count(*) FROM group_memberships") == 3
    assert (
        count(
            conn,
            "SELECT count(*) FROM group_memberships WHERE subject_id = %s",
            ended_long_ago.subject_id,
        )
        == 0
    )
    [(detail,)] = conn.execute(
        "SELECT detail FROM audit_log WHERE action = 'retention.run'"
    ).fetchall()
    assert detail["readings"] == 24

    again = run_retention(
        db_url,
        retention_days_default=365,
        retention_days={"heart-rate": 30},
        relationship_grace_days=30,
        now=NOW,
        chunk=4,
    )
    assert again["readings"] == again["rejections"] == again["group_memberships"] == 0
