"""The writer's transaction statement by statement: backend CPU per reading and
wall time per transaction, by batch size (one committer, no transport).

    python -m bench.statements [--readings 200000] [--subjects 1000] 1000 5000

Every statement of `store.writer.Writer` (staging COPY, subjects' lock, consent
decision, readings COPY, commit) is timed by wrapping psycopg's cursor and
connection methods for this process only; the backend's CPU comes from
/proc/<pid>/stat (10 ms ticks, so the figures are averages over many
transactions). The wall time includes the client's own formatting of COPY rows.
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from bench.common import data_points, scratch_database, seed_registry
from bench.cpu import cpu_seconds
from ingest.gate import Gate
from store.db import make_pool
from store.writer import Writer

STATEMENTS = {  # a fragment of each statement's text -> its name
    "COPY staging_readings": "staging COPY",
    "FOR SHARE": "subjects' lock",
    "consent decision": "decision",
    "COPY readings": "readings COPY",
}
cpu: collections.Counter[str] = collections.Counter()
wall: collections.Counter[str] = collections.Counter()


def _name(statement: object) -> str:
    text = str(statement)
    return next((name for key, name in STATEMENTS.items() if key in text), "other")


@contextmanager
def _timed(conn: psycopg.Connection[Any], name: str) -> Iterator[None]:
    pid = conn.info.backend_pid
    c0, w0 = cpu_seconds(pid), time.perf_counter()
    yield
    cpu[name] += cpu_seconds(pid) - c0
    wall[name] += time.perf_counter() - w0


def instrument() -> None:
    execute, copy, commit = psycopg.Cursor.execute, psycopg.Cursor.copy, psycopg.Connection.commit

    def timed_execute(self: psycopg.Cursor[Any], query: Any, *a: Any, **k: Any) -> Any:
        with _timed(self.connection, _name(query)):
            return execute(self, query, *a, **k)

    @contextmanager
    def timed_copy(self: psycopg.Cursor[Any], statement: Any, *a: Any, **k: Any) -> Iterator[Any]:
        with _timed(self.connection, _name(statement)), copy(self, statement, *a, **k) as c:
            yield c

    def timed_commit(self: psycopg.Connection[Any]) -> None:
        with _timed(self, "commit"):
            commit(self)

    psycopg.Cursor.execute = timed_execute  # type: ignore[method-assign,assignment]
    psycopg.Cursor.copy = timed_copy  # type: ignore[method-assign,assignment]
    psycopg.Connection.commit = timed_commit  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("batches", nargs="*", type=int, default=[1000, 5000])
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--subjects", type=int, default=1_000)
    args = ap.parse_args()
    n = args.readings
    instrument()
    with scratch_database("vitals_bench_statements") as url:
        pid, refs, _ = seed_registry(url, args.subjects)
        points = data_points(n, refs)
        for batch in args.batches:
            with psycopg.connect(url) as conn:
                conn.execute("TRUNCATE readings")
                conn.commit()
            pool = make_pool(url, min_size=1, max_size=1)
            pool.wait()
            gate = Gate(Writer(pool), "bench")
            now = datetime.now(UTC)
            parsed = [
                [(pid, p) for p in gate.parse(orjson.dumps(points[i : i + batch]), now=now)]
                for i in range(0, n, batch)
            ]
            cpu.clear()
            wall.clear()
            for items in parsed:
                gate.write(items)
            pool.close()
            per_reading = ", ".join(f"{k} {1e6 * v / n:.1f}" for k, v in cpu.items())
            per_tx = ", ".join(f"{k} {1e3 * v / len(parsed):.2f}" for k, v in wall.items())
            print(f"batches of {batch:,} ({len(parsed)} transactions, {args.subjects:,} subjects)")
            total = 1e6 * sum(cpu.values()) / n
            print(f"  backend CPU per reading (µs): {per_reading}; total {total:.1f}")
            print(f"  wall per transaction (ms): {per_tx}")


if __name__ == "__main__":
    main()
