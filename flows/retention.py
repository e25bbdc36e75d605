"""Retention: outdated data is removed, and the run reports what it removed.

- Readings older than their type's maximum age (`VITALS_RETENTION_DAYS`,
  a JSON object per type, else `VITALS_RETENTION_DAYS_DEFAULT`).
- Everything of subjects whose relationship ended more than
  `VITALS_RELATIONSHIP_GRACE_DAYS` ago: readings, rejections, memberships.
- Rejections older than the default age; ended memberships older than it.

Plain DELETEs in bounded chunks, each committed on its own; with TimescaleDB,
whole chunks older than every maximum age are dropped first (`drop_chunks`;
the migration's retention policy is the backstop).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from flows import common  # noqa: F401  (quiet Prefect env before prefect is imported)

# isort: split
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.settings import Settings
from store.db import q, translate_errors
from store.registry import audit

DEFAULT_CHUNK = 50_000


def _drain(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> int:
    """Run a chunked DELETE until it removes less than a chunk; returns rows removed."""
    total = 0
    while True:
        with conn.transaction():
            n = conn.execute(query, params).rowcount
        total += n
        if n < params["chunk"]:
            return total


def run_retention(
    database_url: str,
    *,
    retention_days_default: int,
    retention_days: dict[str, int] | None = None,
    relationship_grace_days: int,
    now: datetime | None = None,
    chunk: int = DEFAULT_CHUNK,
    actor: str = "flows.retention",
) -> dict[str, Any]:
    retention_days = dict(retention_days or {})
    for type_, days in retention_days.items():
        if days <= 0:
            raise ValueError(f"retention for {type_} must be a positive number of days")
    now = now or datetime.now(UTC)
    default_before = now - timedelta(days=retention_days_default)
    grace_before = now - timedelta(days=relationship_grace_days)
    by_type: dict[str, int] = {}
    with translate_errors(), psycopg.connect(database_url, autocommit=True) as conn:
        chunks_dropped = 0
        if conn.execute(q("retention_has_timescale")).fetchone()[0]:  # type: ignore[index]
            oldest = max([retention_days_default, *retention_days.values()])
            row = conn.execute(
                q("retention_drop_chunks"), {"before": now - timedelta(days=oldest)}
            ).fetchone()
            chunks_dropped = int(row[0]) if row else 0

        for type_, days in sorted(retention_days.items()):
            by_type[type_] = _drain(
                conn,
                q("retention_readings_of_types"),
                {"types": [type_], "before": now - timedelta(days=days), "chunk": chunk},
            )
        by_type["*"] = _drain(
            conn,
            q("retention_readings_of_other_types"),
            {"types": sorted(retention_days), "before": default_before, "chunk": chunk},
        )

        ended: list[uuid.UUID] = [
            r[0] for r in conn.execute(q("retention_ended_subjects"), {"before": grace_before})
        ]
        relationship_readings = _drain(
            conn, q("retention_readings_of_subjects"), {"subjects": ended, "chunk": chunk}
        )
        rejections = _drain(
            conn,
            q("retention_rejections"),
            {"before": default_before, "subjects": ended, "chunk": chunk},
        )
        groups = _drain(
            conn,
            q("retention_groups"),
            {"before": default_before, "subjects": ended, "chunk": chunk},
        )
        result: dict[str, Any] = {
            "now": now.isoformat(),
            "readings_by_type": {k: v for k, v in by_type.items() if v},
            "readings_expired": sum(by_type.values()),
            "readings_relationship_ended": relationship_readings,
            "readings": sum(by_type.values()) + relationship_readings,
            "rejections": rejections,
            "group_memberships": groups,
            "subjects_past_grace": len(ended),
            "timescale_chunks_dropped": chunks_dropped,
        }
        with conn.transaction():
            audit(conn, actor, "retention.run", **result)
    return result


def run_retention_from_settings(settings: Settings, actor: str) -> dict[str, Any]:
    return run_retention(
        settings.require_database_url(),
        retention_days_default=settings.retention_days_default,
        retention_days=settings.retention_days,
        relationship_grace_days=settings.relationship_grace_days,
        actor=actor,
    )


# Prefect ----------------------------------------------------------------------


@task(
    name="apply-retention",
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=common.transient_failure,
    cache_policy=NO_CACHE,
)
def retention_task(actor: str) -> dict[str, Any]:
    return run_retention_from_settings(Settings(), actor)


@flow(name="vitals-retention", description="Delete readings, rejections and groups past retention.")
def retention_flow(actor: str = "prefect") -> dict[str, Any]:
    result = retention_task(actor)
    get_run_logger().info(
        "retention: %s readings, %s rejections, %s memberships removed",
        result["readings"],
        result["rejections"],
        result["group_memberships"],
    )
    return result
