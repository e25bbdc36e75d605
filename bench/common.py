"""Shared benchmark plumbing: a scratch database, seeded registry, data points."""

from __future__ import annotations

import os
import resource
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from bench.cpu import Meter
from ingest.gate.payload import parse_payload
from schemas.reading import Reading
from store import registry
from store.db import fast_bytes_copy
from store.migrate import migrate
from store.writer import READINGS_TYPES

SECRET_KEY = os.environ.get("VITALS_SECRET_KEY", "bench-key-7c1e9a3f5b2d4e6a8c0b1d3f5a7e9c2b")
SERVER_URL = os.environ.get(
    "VITALS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def scratch_database(prefix: str = "vitals_bench") -> Iterator[str]:
    """A freshly migrated database, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(SERVER_URL, dbname=name)
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(SERVER_URL, autocommit=True) as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def seed_registry(
    url: str, n_subjects: int, types: tuple[str, ...] = ("heart-rate", "blood-pressure")
) -> tuple[str, list[str], str]:
    """One provider, n consenting subjects linked as u0..u(n-1).

    Returns (provider_id, user refs, webhook secret)."""
    with psycopg.connect(url) as conn:
        p = registry.add_provider(conn, SECRET_KEY.encode(), "bench", types, "bench")
        pid = p["provider_id"]
        refs = [f"u{i}" for i in range(n_subjects)]
        for ref in refs:
            sid = registry.add_subject(conn, "EU", [(pid, ref)], "bench")["subject_id"]
            registry.grant_consent(conn, sid, "collection", "bench", provider_id=pid)
        conn.commit()
    return pid, refs, p["webhook_secret"]


def data_points(n: int, refs: list[str], start: datetime | None = None) -> list[dict]:
    """n heart-rate / blood-pressure data points (1 in 4 is blood pressure),
    300 ms apart, by default ending an hour ago (none in the future)."""
    start = start or datetime.now(UTC) - timedelta(seconds=0.3 * n + 3600)
    out = []
    for i in range(n):
        t = (start + timedelta(milliseconds=300 * i)).isoformat().replace("+00:00", "Z")
        if i % 4 == 3:
            body = {
                "systolic_blood_pressure": {"value": 110 + i % 30, "unit": "mmHg"},
                "diastolic_blood_pressure": {"value": 70 + i % 15, "unit": "mmHg"},
                "effective_time_frame": {"date_time": t},
            }
            name, version = "blood-pressure", "4.0"
        else:
            body = {
                "heart_rate": {"value": 55 + i % 60, "unit": "beats/min"},
                "effective_time_frame": {"date_time": t},
            }
            name, version = "heart-rate", "2.0"
        out.append(
            {
                "header": {
                    "id": f"bench-{i}",
                    "creation_date_time": t,
                    "schema_id": {"namespace": "omh", "name": name, "version": version},
                    "acquisition_provenance": {"source_name": "bench", "modality": "sensed"},
                    "user_id": refs[i % len(refs)],
                },
                "body": body,
            }
        )
    return out


COPY_COLUMNS = (
    "effective_time, subject_id, provider_id, reading_id, type, component, value, unit, "
    "orig_value, orig_unit"
)


def ceiling_rows(
    url: str, provider_id: str, points: list[dict], prefix: str = "raw-"
) -> list[tuple]:
    """The rows the gate would store for `points`, ready for the raw COPY ceiling
    (uuids as their 16 bytes, as the writer sends them)."""
    with psycopg.connect(url) as conn:
        subject_of: dict[str, bytes] = {
            ref: sid.bytes
            for ref, sid in conn.execute("SELECT user_ref, subject_id FROM links").fetchall()
        }
    pid = uuid.UUID(provider_id).bytes
    return [
        (
            p.effective_time,
            subject_of[p.user_ref],
            pid,
            prefix + p.id,
            p.type,
            c.name,
            c.value,
            c.unit,
            c.orig_value,
            c.orig_unit,
        )
        for p in parse_payload(points, now=datetime.now(UTC))
        if isinstance(p, Reading)
        for c in p.components
    ]


def raw_copy(url: str, rows: list[tuple], cpu: dict[str, float] | None = None) -> float:
    """The ceiling: the same rows COPYed, in the writer's own (binary) format and
    in one transaction, into a fresh table LIKE readings INCLUDING ALL (the same
    columns, defaults, constraints and indexes), dropped afterwards. Returns the
    seconds of the COPY and its commit; `cpu`, if given, gets the CPU seconds
    of this process ("client") and of its backend ("server") meanwhile."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        fast_bytes_copy(conn)  # as the writer's pool connections do
        cur.execute("CREATE TABLE readings_ceiling (LIKE readings INCLUDING ALL)")
        conn.commit()
        meter = Meter(client=[os.getpid()], server=[conn.info.backend_pid]).start()
        started = time.perf_counter()
        with cur.copy(f"COPY readings_ceiling ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(READINGS_TYPES[:10])
            for row in rows:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - started
        if cpu is not None:
            cpu.update(meter.stop())
        cur.execute("DROP TABLE readings_ceiling")
        conn.commit()
    return elapsed


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
