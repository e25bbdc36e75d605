"""Group derivation, a Parquet export, an audience and statistics at scale:
seconds and peak RSS.

    python -m bench.flows [--subjects 10000] [--days 90]

Seeds a scratch database in SQL (generate_series): every subject has
collection, analytics, research and marketing consent and about six reading
rows a day (heart rate x2, blood pressure (2 rows), steps, SpO2), some
lapsing for the last 15 days: ~5.3M rows for 10k subjects over 90 days; one
partner (region FI, purpose marketing). Each phase runs in its own process
so its peak RSS is its own (the database server's memory is not included):
groups, export (region FI: everyone), audience (the largest group, for the
partner: pseudonyms, log), statistics (region FI, weekly cells by group).
Targets: groups < 60 s, export RSS < 500 MB (issue 5); audience and
statistics each < 60 s and < 500 MB (issue 13).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import SECRET_KEY, peak_rss_mb, scratch_database
from store import partners, registry

SEED_SUBJECTS = """
INSERT INTO subjects (subject_id, residency)
SELECT gen_random_uuid(), CASE WHEN i %% 10 = 0 THEN 'FI' ELSE 'EU' END
FROM generate_series(1, %(subjects)s) AS i
"""
SEED_CONSENTS = """
INSERT INTO consents (consent_id, subject_id, purpose, granted_by)
SELECT gen_random_uuid(), s.subject_id, p, 'bench'
FROM subjects s
CROSS JOIN unnest(ARRAY['collection', 'analytics', 'research', 'marketing']) AS p
"""
SEED_READINGS = """
WITH s AS (SELECT subject_id, row_number() OVER (ORDER BY subject_id) AS n FROM subjects),
base AS (
    SELECT s.subject_id, s.n, d, date_trunc('day', now(), 'UTC') - make_interval(days => d) AS day
    FROM s CROSS JOIN generate_series(1, %(days)s) AS d
    WHERE NOT (s.n %% 7 = 0 AND d <= 15)          -- one in seven lapses
)
INSERT INTO readings (effective_time, subject_id, provider_id, reading_id, type, component,
                      value, unit, orig_value, orig_unit)
SELECT b.day + v.off, b.subject_id, %(provider_id)s, b.n || ':' || b.d || ':' || v.k,
       v.type, v.component, v.value, v.unit, v.value, v.unit
FROM base b CROSS JOIN LATERAL (VALUES
    ('hr1', INTERVAL '7 hours', 'heart-rate', 'heart_rate',
        45 + b.n %% 70 + random() * 10, '/min'),
    ('hr2', INTERVAL '19 hours', 'heart-rate', 'heart_rate',
        45 + b.n %% 70 + random() * 10, '/min'),
    ('bp', INTERVAL '8 hours', 'blood-pressure', 'systolic_blood_pressure',
        105 + b.n %% 50 + random() * 8, 'mm[Hg]'),
    ('bp', INTERVAL '8 hours', 'blood-pressure', 'diastolic_blood_pressure',
        65 + b.n %% 30 + random() * 6, 'mm[Hg]'),
    ('st', INTERVAL '20 hours', 'step-count', 'step_count',
        1000 + b.n %% 13000 + round(random() * 1000), '{steps}'),
    ('o2', INTERVAL '9 hours', 'oxygen-saturation', 'oxygen_saturation',
        88 + b.n %% 11 + random(), '%%')
) AS v(k, off, type, component, value, unit)
"""


LARGEST_GROUP = """
SELECT g.group_key, (SELECT partner_id FROM partners ORDER BY name LIMIT 1)
FROM group_memberships g WHERE g.valid_until IS NULL
GROUP BY g.group_key ORDER BY count(*) DESC, g.group_key LIMIT 1
"""
PHASES = ("groups", "export", "audience", "statistics")


def seed(url: str, subjects: int, days: int) -> int:
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        provider = registry.add_provider(
            conn, SECRET_KEY.encode(), "bench", ["heart-rate"], "bench"
        )
        partners.add_partner(conn, "bench-partner", "FI", ["marketing"], None, "bench")
        conn.execute(SEED_SUBJECTS, {"subjects": subjects})
        conn.execute(SEED_CONSENTS)
        conn.execute(SEED_READINGS, {"days": days, "provider_id": provider["provider_id"]})
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE readings")
        rows = conn.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
    print(
        f"seeded {rows:,} reading rows for {subjects:,} subjects over {days} days "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return int(rows)


def phase(name: str, url: str, out: Path) -> dict[str, object]:
    """Run in a child process: one flow's work, timed (imports excluded)."""
    from flows.common import quiet_prefect_env

    quiet_prefect_env()  # before prefect is imported
    from flows.audience import run_audience
    from flows.export import run_export
    from flows.groups import derive_groups
    from flows.statistics import run_statistics

    if name == "audience":  # the largest group, for the partner
        with psycopg.connect(url) as conn:
            group, partner_id = conn.execute(LARGEST_GROUP).fetchone()  # type: ignore[misc]
    started = time.perf_counter()
    summary: dict[str, object]
    if name == "groups":
        result = derive_groups(url, actor="bench")
        summary = {"subjects": result["subjects"], "memberships_started": result["started"]}
    elif name == "export":
        result = run_export(url, SECRET_KEY.encode(), out, "FI", actor="bench")
        summary = {"rows": result["rows"], "subjects": result["subjects"], "files": result["files"]}
    elif name == "audience":
        result = run_audience(url, SECRET_KEY.encode(), out, group, str(partner_id), actor="bench")
        summary = {"group": group, "members": result["members"]}
    else:
        result = run_statistics(url, out, "FI", period="week", actor="bench")
        summary = {"cells": result["cells"], "suppressed_cells": result["suppressed_cells"]}
    return {
        "phase": name,
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.url, Path(args.out))))
        return

    out = Path(tempfile.mkdtemp(prefix="vitals-bench-export-"))
    try:
        with scratch_database("vitals_bench_flows") as url:
            rows = seed(url, args.subjects, args.days)
            results = []
            for name in PHASES:
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.flows",
                        "--phase",
                        name,
                        "--url",
                        url,
                        "--out",
                        str(out),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        for r in results:
            print(
                f"{r['phase']:>10}: {rows:,} readings in the database, {r['seconds']} s, "
                f"peak RSS {r['peak_rss_mb']} MB  {json.dumps(r)}"
            )
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
