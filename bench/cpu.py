"""CPU time spent by the processes of a benchmark stage, per reading.

On a shared 2-core machine wall time says how fast a stage went; CPU time says
what it cost and who paid: the Python client (the benchmark driver, or the
ingester or API process), the PostgreSQL backends serving it, the broker.
`Meter` takes user+system seconds of a set of processes at `start()` and at
`stop()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import psutil
import psycopg


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 when it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


def backends(url: str) -> list[int]:
    """The PostgreSQL backends connected to the database of `url` (but this query's)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [r[0] for r in rows]


class Meter:
    """CPU seconds of named groups of processes between start() and stop().

    A group is a list of pids or a function listing them, asked again at
    stop(): a process that appeared meanwhile counts from zero."""

    def __init__(self, **groups: Iterable[int] | Callable[[], Iterable[int]]) -> None:
        self.groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}

    def _pids(self, name: str) -> list[int]:
        g = self.groups[name]
        return list(g() if callable(g) else g)

    def start(self) -> Meter:
        self._start = {n: {p: cpu_seconds(p) for p in self._pids(n)} for n in self.groups}
        return self

    def stop(self) -> dict[str, float]:
        self.used = {
            n: sum(cpu_seconds(p) - self._start[n].get(p, 0.0) for p in self._pids(n))
            for n in self.groups
        }
        return self.used

    def per_reading(self, readings: int) -> str:
        """`name 12.3` µs per reading for each group, and their total."""
        parts = [f"{n} {1e6 * s / readings:.1f}" for n, s in self.used.items()]
        total = sum(self.used.values())
        return ", ".join(parts) + f"; total {1e6 * total / readings:.1f} µs/reading"


def bound(ceiling_seconds: float, path_cpu_seconds: float, cores: int | None = None) -> str:
    """The best ratio the path's CPU cost allows: it needs `path_cpu_seconds` of
    CPU (all its processes: client, PostgreSQL, broker) for the readings the
    ceiling stored in `ceiling_seconds`, so with every core busy on it and
    nothing else it reaches at most cores x ceiling_seconds / path_cpu_seconds
    of the ceiling's rate."""
    cores = cores or os.cpu_count() or 1
    best = cores * ceiling_seconds / path_cpu_seconds
    return f"CPU bound on {cores} cores: ratio <= {best:.2f} (cores x ceiling s / path CPU s)"
