"""Gate + writer throughput beside a raw COPY of the same rows into the same table.

python -m bench.writer [--readings 200000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from bench.common import ceiling_rows, data_points, raw_copy, scratch_database, seed_registry
from bench.cpu import Meter, backends, bound
from ingest.gate import Gate
from store.db import make_pool
from store.writer import Outcome, Writer

# As many batches as the MQTT ingester commits at once (ingest.mqtt.pipeline).
COMMITS_IN_FLIGHT = 2


def gate_and_writer(
    url: str,
    pid: str,
    points: list[dict],
    batch: int,
    commits_in_flight: int = COMMITS_IN_FLIGHT,
    cpu: dict[str, float] | None = None,
    ready: Callable[[], object] | None = None,
) -> tuple[float, int]:
    """Parse batch n+1 while batch n commits, as the transports do (the MQTT
    ingester's parse and commit threads; HTTP request threads and the coalescer).

    Each batch reaches the gate as the JSON bytes a transport receives (an
    array of data points), so decoding is timed too. Up to `commits_in_flight`
    batches commit at once, each on its own connection, as the ingester's
    committers do. `cpu`, if given, gets the CPU seconds of this process
    ("client") and of its backends ("server"). `ready`, if given, is called
    once the pool is open, just before the clock starts (a barrier between
    processes)."""
    payloads = [orjson.dumps(points[i : i + batch]) for i in range(0, len(points), batch)]
    pool = make_pool(url, min_size=commits_in_flight, max_size=commits_in_flight + 1)
    pool.wait()
    gate = Gate(Writer(pool), "bench")
    accepted = 0
    if ready is not None:
        ready()
    meter = Meter(client=[os.getpid()], server=lambda: backends(url)).start()
    started = time.perf_counter()
    now = datetime.now(UTC)
    with ThreadPoolExecutor(max_workers=commits_in_flight) as commits:
        pending: deque[Future[list[Outcome]]] = deque()
        for payload in payloads:
            parsed = gate.parse(payload, now=now)
            if len(pending) == commits_in_flight:
                accepted += sum(1 for o in pending.popleft().result() if o.status == "accepted")
            pending.append(commits.submit(gate.write, [(pid, p) for p in parsed]))
        while pending:
            accepted += sum(1 for o in pending.popleft().result() if o.status == "accepted")
    elapsed = time.perf_counter() - started
    if cpu is not None:
        cpu.update(meter.stop())
    pool.close()
    return elapsed, accepted


_SHARES: list[list[dict]] = []  # set before forking: the workers inherit it
_START: Any = None  # a multiprocessing barrier, likewise


def _worker(args: tuple[str, str, int, int]) -> tuple[float, float, int]:
    url, pid, index, batch = args
    gc.collect()
    gc.freeze()
    marks: list[float] = []

    def ready() -> None:
        _START.wait()
        marks.append(time.perf_counter())

    seconds, accepted = gate_and_writer(url, pid, _SHARES[index], batch, ready=ready)
    return marks[0], marks[0] + seconds, accepted


def gate_and_writer_processes(
    url: str, pid: str, points: list[dict], batch: int, processes: int
) -> tuple[float, int]:
    """The same pipeline in N processes (as N ingesters or API workers run):
    each gets its share of the data points by fork (nothing pickled), opens its
    pool, then all start together; timed from that start until the last is
    done (perf_counter is the system's monotonic clock, the same in every
    process)."""
    global _START
    _SHARES[:] = [points[i::processes] for i in range(processes)]
    ctx = multiprocessing.get_context("fork")
    _START = ctx.Barrier(processes)
    with ctx.Pool(processes) as workers:
        results = workers.map(_worker, [(url, pid, i, batch) for i in range(processes)])
    started = min(r[0] for r in results)
    finished = max(r[1] for r in results)
    return finished - started, sum(r[2] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--subjects", type=int, default=1_000)
    ap.add_argument(
        "--processes", type=int, default=2, help="also run the gate + writer in this many processes"
    )
    ap.add_argument("--commits-in-flight", type=int, default=COMMITS_IN_FLIGHT)
    args = ap.parse_args()

    with scratch_database() as url:
        pid, refs, _ = seed_registry(url, args.subjects)
        points = data_points(args.readings, refs)
        rows = ceiling_rows(url, pid, points)
        # The inputs are built up front; keep their millions of objects out of the
        # cyclic GC's scans, which a transport (one batch in memory) never pays.
        gc.collect()
        gc.freeze()
        copy_cpu: dict[str, float] = {}
        copy_s = raw_copy(url, rows, copy_cpu)
        gate_cpu: dict[str, float] = {}
        gate_s, accepted = gate_and_writer(
            url, pid, points, args.batch, args.commits_in_flight, gate_cpu
        )
        assert accepted == args.readings, f"only {accepted} of {args.readings} accepted"
        multi_s = 0.0
        if args.processes > 1:
            with psycopg.connect(url) as conn:
                conn.execute("TRUNCATE readings")
                conn.commit()
            multi_s, accepted = gate_and_writer_processes(
                url, pid, points, args.batch, args.processes
            )
            assert accepted == args.readings, f"only {accepted} of {args.readings} accepted"

    n = args.readings
    copy_rate, gate_rate = n / copy_s, n / gate_s
    print(f"{'stage':<28}{'readings':>10}{'rows':>10}{'seconds':>10}{'readings/s':>14}")
    print(f"{'raw COPY (ceiling)':<28}{n:>10}{len(rows):>10}{copy_s:>10.2f}{copy_rate:>14,.0f}")
    print(f"{'gate + writer':<28}{n:>10}{len(rows):>10}{gate_s:>10.2f}{gate_rate:>14,.0f}")
    print(f"ratio gate+writer / raw COPY: {gate_rate / copy_rate:.2f} (target >= 0.5)")
    for label, used in (("raw COPY", copy_cpu), ("gate + writer", gate_cpu)):
        parts = ", ".join(f"{k} {1e6 * v / n:.1f}" for k, v in used.items())
        print(f"CPU per reading, {label}: {parts} µs (total {1e6 * sum(used.values()) / n:.1f})")
    print(bound(copy_s, sum(gate_cpu.values())))
    if multi_s:
        multi_rate = n / multi_s
        label = f"gate + writer, {args.processes} procs"
        print(f"{label:<28}{n:>10}{len(rows):>10}{multi_s:>10.2f}{multi_rate:>14,.0f}")
        print(
            f"ratio gate+writer ({args.processes} processes) / raw COPY: "
            f"{multi_rate / copy_rate:.2f}"
        )


if __name__ == "__main__":
    main()
