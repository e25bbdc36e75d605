"""Gate + writer throughput beside a raw COPY of the same rows into the same table.

    python -m bench.writer [--readings 200000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import psycopg

from bench.common import data_points, scratch_database, seed_registry
from ingest.db import make_pool
from ingest.gate import parse_payload
from ingest.writer import Writer
from schemas.reading import Reading

COLUMNS = ("effective_time, subject_id, provider_id, reading_id, type, component, value, unit, "
           "orig_value, orig_unit")


def raw_copy(url: str, rows: list[tuple]) -> float:
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY readings ({COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
    return time.perf_counter() - started


def gate_and_writer(url: str, pid: str, points: list[dict], batch: int) -> tuple[float, int]:
    pool = make_pool(url, min_size=1, max_size=2)
    pool.wait()
    writer = Writer(pool)
    accepted = 0
    started = time.perf_counter()
    now = datetime.now(UTC)
    for i in range(0, len(points), batch):
        parsed = parse_payload(points[i:i + batch], now=now)
        out = writer.write([(pid, p) for p in parsed], "bench")
        accepted += sum(1 for o in out if o.status == "accepted")
    elapsed = time.perf_counter() - started
    pool.close()
    return elapsed, accepted


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--subjects", type=int, default=1_000)
    args = ap.parse_args()

    with scratch_database() as url:
        pid, refs, _ = seed_registry(url, args.subjects)
        points = data_points(args.readings, refs)
        with psycopg.connect(url) as conn:
            subject_of = dict(conn.execute("SELECT user_ref, subject_id FROM links").fetchall())
        # The same rows the gate will store, prepared up front for the raw COPY.
        now = datetime.now(UTC)
        rows = []
        for p in parse_payload(points, now=now):
            assert isinstance(p, Reading)
            for c in p.components:
                rows.append((p.effective_time, subject_of[p.user_ref], pid, "raw-" + p.id,
                             p.type, c.name, c.value, c.unit, c.orig_value, c.orig_unit))
        copy_s = raw_copy(url, rows)
        with psycopg.connect(url) as conn:
            conn.execute("TRUNCATE readings")
            conn.commit()
        gate_s, accepted = gate_and_writer(url, pid, points, args.batch)
        assert accepted == args.readings, f"only {accepted} of {args.readings} accepted"

    n = args.readings
    copy_rate, gate_rate = n / copy_s, n / gate_s
    print(f"{'stage':<28}{'readings':>10}{'rows':>10}{'seconds':>10}{'readings/s':>14}")
    print(f"{'raw COPY (ceiling)':<28}{n:>10}{len(rows):>10}{copy_s:>10.2f}{copy_rate:>14,.0f}")
    print(f"{'gate + writer':<28}{n:>10}{len(rows):>10}{gate_s:>10.2f}{gate_rate:>14,.0f}")
    print(f"ratio gate+writer / raw COPY: {gate_rate / copy_rate:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
