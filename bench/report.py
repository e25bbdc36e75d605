"""`make bench`: every benchmark in one run, written to docs/benchmarks.md.

Runs bench.writer, bench.mqtt, bench.http and bench.flows one after another
(never at the same time), each in its own process, samples the peak RSS of
every process each one starts (the API server, the ingester, the benchmark
itself), and writes their output with a description of the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

from bench.common import SERVER_URL

ROOT = Path(__file__).resolve().parent.parent
BENCHES = {
    "writer": "gate + writer vs raw COPY (issue 2)",
    "mqtt": "MQTT end to end vs raw COPY and a naive ingester (issue 4)",
    "http": "HTTP end to end vs raw COPY, single-request latency (issue 3)",
    "flows": "groups, export (issue 5), audience and statistics (issue 13) at 5M+ readings",
}

ANALYSIS = """\
## What limits throughput

Everything here shares 2 cores: the Python processes, the PostgreSQL server
and Mosquitto (and whatever else runs on the machine: see the load averages
above). The "CPU per reading" lines say who pays (bench/cpu.py: user+system
seconds of the driver, the API's or the ingesters' processes, every
PostgreSQL backend of the bench database, Mosquitto). The raw COPY ceiling is
one backend inserting while Python formats rows, on one core. A write path
that needs C µs of CPU per reading over all its processes can reach at most
2 cores / C readings per second, which the "CPU bound" lines turn into the
best ratio to the ceiling that path could show if it had both cores to
itself; the measured ratios sit at 70-95 % of that bound, so every path is
CPU-bound, not waiting on locks or round trips.

Where the CPU goes (docs/profile.md has the statement-by-statement and
py-spy figures): PostgreSQL takes 55-65 % of it. Its share per reading is
the COPY of the readings (what the ceiling pays, and a little more in
smaller statements) plus the consent gate: the staging COPY, the FOR SHARE
lock of the batch's subjects and the consent decision with its resend
probe, about 9 µs per reading more than the ceiling in transactions of
1,000 readings and about 5 µs in transactions of 5,000 (each transaction
also has a fixed cost of 5-6 ms wall, 3-4 ms of it server CPU). Python
takes the rest: the one-pass msgspec decode and checks (about 45 % of it),
the COPY rows and outcomes (about 30 %), the transport. The MQTT ingester
commits about 5,000 readings per transaction (QoS 1 keeps many messages in
flight); the webhook commits each 1,000-reading request on its own unless
requests queue, so its PostgreSQL cost per reading is higher and its ratio
lower; with 16 concurrent clients instead of 4 its transactions grow to about
2,300 readings and it reached 0.51 in the session's profiling runs.

So on this machine the ratios are set by CPU per reading, and they move by
±0.05-0.1 between runs with the machine's speed. What would raise them:
more cores (the API's workers and the MQTT ingesters scale out, each with
its own pool and committers), larger transactions (more concurrent
requests), and a cheaper consent gate in the database (a lock that does not
write every subject's row, a resend check without a per-reading probe).
"""


def machine() -> list[tuple[str, str]]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rows = [
        ("CPU", f"{cpu} ({os.cpu_count()} logical cores)"),
        ("memory", f"{psutil.virtual_memory().total / 2**30:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
    ]
    try:
        with psycopg.connect(SERVER_URL, connect_timeout=3) as conn:
            rows.append(("PostgreSQL", str(conn.execute("SHOW server_version").fetchone()[0])))  # type: ignore[index]
    except psycopg.Error:
        rows.append(("PostgreSQL", "unreachable"))
    mosquitto = shutil.which("mosquitto")
    if mosquitto:
        out = subprocess.run([mosquitto, "-h"], capture_output=True, text=True).stdout
        rows.append(("Mosquitto", out.splitlines()[0] if out else "installed"))
    rows.append(("load average before the run", " ".join(f"{x:.2f}" for x in os.getloadavg())))
    return rows


KNOWN = {"vitals serve (API)", "vitals mqtt (ingester, each)", "mosquitto", "benchmark driver"}


def role(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "?"
    for marker, name in (
        ("cli serve", "vitals serve (API)"),
        (" serve ", "vitals serve (API)"),
        ("cli mqtt", "vitals mqtt (ingester, each)"),
        (" mqtt ", "vitals mqtt (ingester, each)"),
        ("mosquitto", "mosquitto"),
        ("bench.", "benchmark driver"),
    ):
        if marker in cmd:
            return name
    return proc.name()


def run(name: str, extra: list[str]) -> tuple[str, float, dict[str, float], int]:
    """Run one benchmark; returns its output, seconds, peak RSS (MB) per process role."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peaks: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(child.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for p in procs:
                try:
                    rss = p.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                key = role(p)
                if key not in KNOWN:  # a worker process of `vitals serve --workers`
                    try:
                        ancestors = {role(a) for a in p.parents()}
                    except psutil.Error:
                        ancestors = set()
                    if "vitals serve (API)" in ancestors:
                        key = "vitals serve worker (API, each)"
                peaks[key] = max(peaks.get(key, 0.0), rss)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines = []
    assert child.stdout is not None
    for line in child.stdout:
        print(f"[{name}] {line}", end="", flush=True)
        lines.append(line)
    code = child.wait()
    done.set()
    sampler.join()
    return "".join(lines), time.perf_counter() - started, peaks, code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated subset of " + ",".join(BENCHES))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    info = machine()
    sections, failed = [], []
    for name in names:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        output, seconds, peaks, code = run(name, [])
        if code:
            failed.append(name)
        status = f" — FAILED (exit {code})" if code else ""
        rss = "\n".join(
            f"| {k} | {v:,.0f} MB |" for k, v in sorted(peaks.items()) if k != "?" and v >= 1
        )
        sections.append(
            f"## `bench.{name}`: {BENCHES[name]}\n\n"
            f"Wall time {seconds:.0f} s{status}; load average before it: {load}.\n\n"
            f"```\n{output.rstrip()}\n```\n\n"
            f"| process | peak RSS |\n|---|---|\n{rss}\n"
        )
    doc = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Figures are from one",
        "run on the machine below, every benchmark alone on it; they are measurements,",
        "not promises: on this shared 2-core machine (other work runs on it; see the load",
        "averages) they vary by about ±30 % between runs.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info],
        "",
        *sections,
        ANALYSIS,
    ]
    Path(args.out).write_text("\n".join(doc))
    print(f"wrote {args.out}", file=sys.stderr)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
