"""The project's SQL on TimescaleDB 2.23 (WASM, PGlite): migrations, policies,
continuous aggregates, group queries, erasure on compressed chunks, retention.

One database for the whole module, shared in file order: every test seeds its
own subjects in its own time range. No COPY in PGlite, so rows are seeded with
INSERT ... SELECT generate_series. Background jobs do not run; policies are run
with CALL run_job(id), as the scheduler would.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from store.db import queries, sql_dir
from store.migrate import available, migrate

pytestmark = pytest.mark.timescale

RULES = json.loads((files("flows") / "rules_v1.json").read_text(encoding="utf-8"))
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_CAGG = re.compile(
    r"CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)"
    r"\s+WITH\s*\(\s*timescaledb\.continuous",
    re.IGNORECASE,
)


def defined_caggs() -> set[str]:
    """Continuous aggregates the migrations create (when TimescaleDB exists)."""
    return {name for m in available() for name in _CAGG.findall(m.sql)}


def seed(
    conn: psycopg.Connection,
    subject: uuid.UUID,
    *,
    first_day: int,
    days: int,
    components: dict[str, tuple[str, float]],
    per_day: int = 1,
) -> int:
    """`per_day` readings of each component on `days` UTC days ending `first_day`
    days before today (00:00 UTC), at 12:00 UTC plus an hour per reading."""
    provider = uuid.uuid5(uuid.NAMESPACE_URL, "vitals-timescale-provider")
    total = 0
    for component, (rtype, value) in components.items():
        cur = conn.execute(
            """
            INSERT INTO readings (effective_time, subject_id, provider_id, reading_id,
                                  type, component, value, unit, orig_value, orig_unit)
            SELECT date_trunc('day', now(), 'UTC') - make_interval(days => %(first)s - d)
                       + make_interval(hours => 12 + k),
                   %(subject)s, %(provider)s, %(subject)s::text || '-' || d || '-' || k,
                   %(type)s, %(component)s, %(value)s, 'u', %(value)s, 'u'
            FROM generate_series(0, %(days)s - 1) AS d, generate_series(0, %(per_day)s - 1) AS k
            """,
            {
                "first": first_day,
                "days": days,
                "per_day": per_day,
                "subject": subject,
                "provider": provider,
                "type": rtype,
                "component": component,
                "value": value,
            },
        )
        total += cur.rowcount
    return total


def add_subject(conn: psycopg.Connection, *purposes: str) -> uuid.UUID:
    sid = uuid.uuid4()
    conn.execute("INSERT INTO subjects (subject_id, residency) VALUES (%s, 'FI')", (sid,))
    for purpose in purposes:
        conn.execute(
            "INSERT INTO consents (consent_id, subject_id, purpose) VALUES (%s, %s, %s)",
            (uuid.uuid4(), sid, purpose),
        )
    return sid


def count(conn: psycopg.Connection, query: str | sql.Composed, *params: Any) -> int:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return int(row[0])


def job_id(conn: psycopg.Connection, proc: str, table: str) -> int:
    row = conn.execute(
        "SELECT job_id FROM timescaledb_information.jobs "
        "WHERE proc_name = %s AND hypertable_name = %s",
        (proc, table),
    ).fetchone()
    assert row is not None, f"no {proc} job on {table}"
    return int(row[0])


def cagg_job_id(conn: psycopg.Connection, view: str) -> int:
    row = conn.execute(
        "SELECT j.job_id FROM timescaledb_information.jobs j "
        "JOIN timescaledb_information.continuous_aggregates c "
        "  ON c.view_name = %s AND j.hypertable_name = c.materialization_hypertable_name "
        "WHERE j.proc_name = 'policy_refresh_continuous_aggregate'",
        (view,),
    ).fetchone()
    if row is None:  # TimescaleDB names the view itself in jobs.hypertable_name
        return job_id(conn, "policy_refresh_continuous_aggregate", view)
    return int(row[0])


def chunks(conn: psycopg.Connection, older: timedelta, newer: timedelta) -> list[str]:
    """Chunks of readings wholly between now() - newer and now() - older."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT c::text FROM show_chunks('readings', older_than => now() - %s, "
            "newer_than => now() - %s) AS c",
            (older, newer),
        ).fetchall()
    ]


# Schema -----------------------------------------------------------------------


def test_every_migration_applies(ts: psycopg.Connection, migrated: dict[str, Any]) -> None:
    names = [m.path.name for m in available()]
    assert migrated["names"] == names
    assert dict(ts.execute("SELECT version, name FROM schema_migrations").fetchall()) == {
        m.version: m.name for m in available()
    }
    assert ts.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone() == ("2.23.0-dev",)


def test_migrate_again_is_a_no_op(timescale_server: Any, migrated: dict[str, Any]) -> None:
    assert migrate(timescale_server.url) == []


def test_readings_is_a_hypertable_of_7_day_chunks(ts: psycopg.Connection) -> None:
    assert ts.execute(
        "SELECT num_dimensions, compression_enabled FROM timescaledb_information.hypertables "
        "WHERE hypertable_schema = 'public' AND hypertable_name = 'readings'"
    ).fetchone() == (1, True)
    assert ts.execute(
        "SELECT column_name, time_interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_name = 'readings'"
    ).fetchall() == [("effective_time", timedelta(days=7))]
    # The plain-PostgreSQL fallback index is not created next to the hypertable.
    assert ts.execute("SELECT to_regclass('readings_time_brin')").fetchone() == (None,)


def test_compression_segments_by_subject_and_type(ts: psycopg.Connection) -> None:
    rows = ts.execute(
        "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
        "FROM timescaledb_information.compression_settings "
        "WHERE hypertable_name = 'readings' ORDER BY attname"
    ).fetchall()
    assert rows == [
        ("effective_time", None, 1, True),
        ("subject_id", 1, None, None),
        ("type", 2, None, None),
    ]


def test_compression_and_retention_policies(ts: psycopg.Connection) -> None:
    configs = dict(
        ts.execute(
            "SELECT proc_name, config FROM timescaledb_information.jobs "
            "WHERE hypertable_name = 'readings'"
        ).fetchall()
    )
    assert configs["policy_compression"]["compress_after"] == "30 days"
    assert configs["policy_retention"]["drop_after"] == "3650 days"


def test_continuous_aggregates_of_the_migrations(ts: psycopg.Connection) -> None:
    expected = defined_caggs()
    found = dict(
        ts.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
        ).fetchall()
    )
    assert set(found) == expected
    for view in expected:
        # Real time: rows not yet materialised are still visible.
        assert found[view] is False, view
        cagg_job_id(ts, view)  # and a refresh policy


@pytest.mark.skipif(not defined_caggs(), reason="the migrations define no continuous aggregate")
def test_readings_daily_is_utc_days_like_the_plain_view(ts: psycopg.Connection) -> None:
    sid = add_subject(ts, "collection")
    # Readings just before and after 00:00 UTC (02:00 in the session's zone).
    ts.execute(
        """
        INSERT INTO readings (effective_time, subject_id, provider_id, reading_id,
                              type, component, value, unit, orig_value, orig_unit, erroneous)
        SELECT date_trunc('day', now(), 'UTC') - make_interval(days => 40 + d / 4)
                   + make_interval(mins => (d %% 4) * 30 - 60),
               %(s)s, %(s)s, 'u' || d, 'step-count', 'step_count', 100 * d, '{steps}',
               100 * d, '{steps}', d %% 7 = 0
        FROM generate_series(0, 79) AS d
        """,
        {"s": sid},
    )
    ts.execute("CALL run_job(%s)", (cagg_job_id(ts, "readings_daily"),))
    expected = ts.execute(
        "SELECT date_trunc('day', effective_time, 'UTC'), count(*), sum(value) "
        "FROM readings WHERE subject_id = %s AND NOT erroneous GROUP BY 1 ORDER BY 1",
        (sid,),
    ).fetchall()
    got = ts.execute(
        "SELECT day, n, total FROM readings_daily WHERE subject_id = %s ORDER BY 1", (sid,)
    ).fetchall()
    assert len(got) >= 20
    assert got == expected


# Group queries ----------------------------------------------------------------


def _groups_file_queries() -> list[str]:
    text = (sql_dir("queries") / "groups.sql").read_text(encoding="utf-8")
    return [m.group(1) for m in _NAME.finditer(text)]


def test_group_queries_run_and_find_the_expected_groups(ts: psycopg.Connection) -> None:
    high = add_subject(ts, "collection", "analytics")
    normal = add_subject(ts, "collection", "analytics")
    refused = add_subject(ts, "collection")  # no analytics consent: never in a group
    bp_high = {
        "systolic_blood_pressure": ("blood-pressure", 150.0),
        "diastolic_blood_pressure": ("blood-pressure", 95.0),
        "step_count": ("step-count", 12000.0),
    }
    bp_normal = {
        "systolic_blood_pressure": ("blood-pressure", 110.0),
        "diastolic_blood_pressure": ("blood-pressure", 70.0),
        "step_count": ("step-count", 3000.0),
    }
    seeded = sum(
        seed(ts, sid, first_day=25, days=25, components=comps)
        for sid, comps in ((high, bp_high), (normal, bp_normal), (refused, bp_high))
    )
    assert seeded == 3 * 25 * 3
    # As the hourly refresh policy would have done before the group run.
    for view in defined_caggs():
        ts.execute("CALL run_job(%s)", (cagg_job_id(ts, view),))

    as_of = datetime.now(UTC)
    end = as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=RULES["window_days"])
    params = {
        "as_of": as_of,
        "version": RULES["version"],
        "window_end": end,
        "window_days": RULES["window_days"],
        "lapse_days": RULES["lapse_days"],
        "rules": Jsonb(RULES["rules"]),
        "window": Jsonb({"window_from": start.isoformat(), "window_until": end.isoformat()}),
    }
    names = _groups_file_queries()
    assert {"groups_eligible", "groups_metrics", "groups_matches", "groups_start"} <= set(names)
    results: dict[str, Any] = {}
    with ts.transaction():
        for name in names:
            cur = ts.execute(queries()[name], params if "%(" in queries()[name] else None)
            results[name] = cur.fetchall() if cur.description else cur.rowcount
        # group_metrics is emptied at commit: read what the rules were given.
        metrics = dict(ts.execute("SELECT subject_id, metrics FROM group_metrics").fetchall())
    assert results["groups_start"] == 6

    got = {
        (r[0], r[1])
        for r in ts.execute(
            "SELECT subject_id, group_key FROM group_memberships "
            "WHERE valid_until IS NULL AND subject_id = ANY(%s)",
            ([high, normal, refused],),
        ).fetchall()
    }
    assert got == {
        (high, "blood_pressure_stage_2"),
        (high, "activity_active"),
        (high, "engagement_regular"),
        (normal, "blood_pressure_normal"),
        (normal, "activity_sedentary"),
        (normal, "engagement_regular"),
    }
    # Raw-reading metrics and the readings_daily ones (steps, active days).
    assert {k: metrics[high][k] for k in ("bp_n", "systolic_mean", "diastolic_mean")} == {
        "bp_n": 25,
        "systolic_mean": 150,
        "diastolic_mean": 95,
    }
    assert {k: metrics[high][k] for k in ("step_days", "steps_per_day", "active_days")} == {
        "step_days": 25,
        "steps_per_day": 12000,
        "active_days": 25,
    }
    assert metrics[high]["readings_n"] == 75
    assert refused not in metrics


# Policies, erasure, retention -------------------------------------------------


def test_every_policy_job_runs(ts: psycopg.Connection) -> None:
    sid = add_subject(ts, "collection")
    # 28 days of readings, 60 to 33 days old: the 29 days from 60 to 31 days ago
    # always hold whole 7-day chunks, whatever today's date (14 days did not).
    seed(ts, sid, first_day=60, days=28, components={"heart_rate": ("heart-rate", 61.0)})
    jobs = ts.execute(
        "SELECT job_id, proc_name FROM timescaledb_information.jobs "
        "WHERE proc_name LIKE 'policy\\_%' AND hypertable_name IS NOT NULL ORDER BY job_id"
    ).fetchall()
    assert {p for _, p in jobs} >= {"policy_compression", "policy_retention"}
    for job, _ in jobs:
        ts.execute("CALL run_job(%s)", (job,))
    stats = dict(
        ts.execute(
            "SELECT job_id, last_run_status FROM timescaledb_information.job_stats "
            "WHERE job_id = ANY(%s)",
            ([j for j, _ in jobs],),
        ).fetchall()
    )
    assert all(stats.get(j) in (None, "Success") for j, _ in jobs), stats
    # The compression policy compressed the chunks older than 30 days.
    old = chunks(ts, timedelta(days=31), timedelta(days=60))
    assert len(old) >= 2, old
    compressed = dict(
        ts.execute(
            "SELECT format('%I.%I', chunk_schema, chunk_name), is_compressed "
            "FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'"
        ).fetchall()
    )
    assert all(compressed[c] for c in old), compressed
    assert count(ts, "SELECT count(*) FROM readings WHERE subject_id = %s", sid) == 28


def test_erasure_delete_on_a_compressed_chunk(ts: psycopg.Connection) -> None:
    erased = add_subject(ts, "collection")
    kept = add_subject(ts, "collection")
    hr = {"heart_rate": ("heart-rate", 70.0), "step_count": ("step-count", 5000.0)}
    for sid in (erased, kept):
        seed(ts, sid, first_day=90, days=21, components=hr, per_day=4)
    doomed = chunks(ts, timedelta(days=69), timedelta(days=91))
    assert len(doomed) >= 2
    for chunk in doomed:
        ts.execute("SELECT compress_chunk(%s::regclass, if_not_compressed => true)", (chunk,))
    rows = ts.execute(
        "SELECT format('%I.%I', chunk_schema, chunk_name), is_compressed "
        "FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'"
    ).fetchall()
    assert all(dict(rows)[c] for c in doomed)
    # The uncompressed heaps are empty: the subject's rows live in compressed form.
    heap = sql.SQL("SELECT count(*) FROM ONLY {}")
    assert sum(count(ts, heap.format(sql.Identifier(*c.split(".")))) for c in doomed) == 0
    assert count(ts, "SELECT count(*) FROM readings WHERE subject_id = %s", erased) == 168

    deleted = ts.execute("DELETE FROM readings WHERE subject_id = %s", (erased,)).rowcount
    assert deleted == 168
    assert count(ts, "SELECT count(*) FROM readings WHERE subject_id = %s", erased) == 0
    assert count(ts, "SELECT count(*) FROM readings WHERE subject_id = %s", kept) == 168
    # The compression policy compresses what the DELETE decompressed.
    ts.execute("CALL run_job(%s)", (job_id(ts, "policy_compression", "readings"),))
    assert count(ts, "SELECT count(*) FROM readings WHERE subject_id = %s", kept) == 168


def test_erasure_query_of_the_rights_flow_deletes_only_the_subject(
    ts: psycopg.Connection,
) -> None:
    erased = add_subject(ts, "collection")
    kept = add_subject(ts, "collection")
    hr = {"heart_rate": ("heart-rate", 70.0)}
    # Two weekly chunks: in one the erased subject's rows come first, in the
    # other the kept subject's, so the same ctids name different subjects.
    seed(ts, erased, first_day=130, days=7, components=hr, per_day=8)
    seed(ts, kept, first_day=130, days=14, components=hr, per_day=8)
    seed(ts, erased, first_day=123, days=7, components=hr, per_day=8)
    query = queries()["erasure_delete_readings"]
    while ts.execute(query, {"subject_id": erased, "chunk": 50}).rowcount:
        pass
    assert count(ts, "SELECT count(*) FROM readings WHERE subject_id = %s", erased) == 0
    assert count(ts, "SELECT count(*) FROM readings WHERE subject_id = %s", kept) == 112


@pytest.mark.skipif(not defined_caggs(), reason="the migrations define no continuous aggregate")
def test_erasure_reaches_the_continuous_aggregate(ts: psycopg.Connection) -> None:
    sid = add_subject(ts, "collection")
    seed(ts, sid, first_day=160, days=10, components={"step_count": ("step-count", 4000.0)})
    # Materialised when those days were recent (the hourly policy did it then).
    ts.execute(
        "CALL refresh_continuous_aggregate('readings_daily', now() - interval '170 days', "
        "now() - interval '140 days')"
    )
    assert count(ts, "SELECT count(*) FROM readings_daily WHERE subject_id = %s", sid) == 10
    ts.execute("DELETE FROM readings WHERE subject_id = %s", (sid,))
    ts.execute("CALL run_job(%s)", (cagg_job_id(ts, "readings_daily"),))
    assert count(ts, "SELECT count(*) FROM readings_daily WHERE subject_id = %s", sid) == 0


def test_erasure_refreshes_the_aggregates_at_once(ts: psycopg.Connection) -> None:
    """What rights.erasure does right after deleting a subject's readings: the
    named queries find the aggregates, and the refresh empties the subject's days
    without waiting for the hourly policy."""
    sid = add_subject(ts, "collection")
    seed(ts, sid, first_day=200, days=5, components={"step_count": ("step-count", 3000.0)})
    ts.execute(
        "CALL refresh_continuous_aggregate('readings_daily', now() - interval '210 days', "
        "now() - interval '190 days')"
    )
    assert count(ts, "SELECT count(*) FROM readings_daily WHERE subject_id = %s", sid) == 5
    assert ts.execute(queries()["timescaledb_present"]).fetchone() == (True,)
    views = [r[0] for r in ts.execute(queries()["erasure_continuous_aggregates"]).fetchall()]
    assert views == ["public.readings_daily"]
    ts.execute("DELETE FROM readings WHERE subject_id = %s", (sid,))
    for view in views:
        ts.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (view,))
    assert count(ts, "SELECT count(*) FROM readings_daily WHERE subject_id = %s", sid) == 0


def test_retention_job_drops_old_chunks(ts: psycopg.Connection) -> None:
    old = add_subject(ts, "collection")
    seed(ts, old, first_day=420, days=30, components={"heart_rate": ("heart-rate", 66.0)})
    before_recent = count(
        ts, "SELECT count(*) FROM readings WHERE effective_time > now() - interval '365 days'"
    )
    assert chunks(ts, timedelta(days=365), timedelta(days=3650))
    try:
        ts.execute("SELECT remove_retention_policy('readings')")
        ts.execute("SELECT add_retention_policy('readings', INTERVAL '365 days')")
        job = job_id(ts, "policy_retention", "readings")
        ts.execute("CALL run_job(%s)", (job,))
    finally:
        ts.execute("SELECT remove_retention_policy('readings', if_exists => true)")
        ts.execute("SELECT add_retention_policy('readings', INTERVAL '3650 days')")
    assert chunks(ts, timedelta(days=365), timedelta(days=3650)) == []
    assert count(ts, "SELECT count(*) FROM readings WHERE subject_id = %s", old) == 0
    assert before_recent == count(
        ts, "SELECT count(*) FROM readings WHERE effective_time > now() - interval '365 days'"
    )


def test_the_app_role_refreshes_the_aggregates_as_their_owner_role(ts: psycopg.Connection) -> None:
    """vitals_app owns nothing, and only an aggregate's owner may refresh it:
    erasure (rights.erasure._refresh_aggregates) acts as vitals_aggregates, which
    migration 0007 made the owner and granted to vitals_app."""
    sid = add_subject(ts, "collection")
    seed(ts, sid, first_day=230, days=3, components={"step_count": ("step-count", 1000.0)})
    ts.execute(
        "CALL refresh_continuous_aggregate('readings_daily', now() - interval '240 days', "
        "now() - interval '220 days')"
    )
    assert count(ts, "SELECT count(*) FROM readings_daily WHERE subject_id = %s", sid) == 3
    ts.execute("DELETE FROM readings WHERE subject_id = %s", (sid,))
    ts.execute("SET ROLE vitals_app")
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            ts.execute("CALL refresh_continuous_aggregate('public.readings_daily', NULL, NULL)")
        assert ts.execute(queries()["aggregate_refresh_role"]).fetchone() == (True,)
        ts.execute("SET ROLE vitals_aggregates")
        ts.execute("CALL refresh_continuous_aggregate('public.readings_daily', NULL, NULL)")
    finally:
        ts.execute("RESET ROLE")
    assert count(ts, "SELECT count(*) FROM readings_daily WHERE subject_id = %s", sid) == 0
