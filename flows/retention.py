"""Retention: outdated data is removed, and the run reports what it removed.

- Readings older than their type's maximum age (`VITALS_RETENTION_DAYS`,
  a JSON object per type, else `VITALS_RETENTION_DAYS_DEFAULT`).
- Everything of subjects whose relationship ended more than
  `VITALS_RELATIONSHIP_GRACE_DAYS` ago: readings, rejections, memberships.
- Rejections older than the default age; ended memberships older than it.

Plain DELETEs in bounded chunks, each committed on its own (`store.retention`);
with TimescaleDB, whole chunks older than every maximum age are dropped first
(`drop_chunks`; the migration's retention policy is the backstop).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.settings import Settings
from flows import common
from store import retention as queries
from store.db import connect, translate_errors
from store.registry import audit

DEFAULT_CHUNK = 50_000


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
    with translate_errors(), connect(database_url, autocommit=True) as conn:
        chunks_dropped = 0
        if queries.has_timescale(conn):
            oldest = max([retention_days_default, *retention_days.values()])
            chunks_dropped = queries.drop_reading_chunks(conn, now - timedelta(days=oldest))

        for type_, days in sorted(retention_days.items()):
            by_type[type_] = queries.delete_readings_of_types(
                conn, [type_], now - timedelta(days=days), chunk
            )
        by_type["*"] = queries.delete_readings_of_other_types(
            conn, sorted(retention_days), default_before, chunk
        )

        ended = queries.subjects_ended_before(conn, grace_before)
        relationship_readings = queries.delete_readings_of_subjects(conn, ended, chunk)
        rejections = queries.delete_rejections(conn, default_before, ended, chunk)
        groups = queries.delete_group_memberships(conn, default_before, ended, chunk)
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
