"""HTTP webhook throughput against a real `vitals serve`, beside a raw COPY of the same rows.

    python -m bench.http [--readings 250000] [--batch 1000] [--clients 4]

1. raw COPY of the rows the gate would store, straight into `readings` (the ceiling);
2. the same readings as signed batches from concurrent clients to `vitals serve`
   (the process a partner talks to: uvicorn, signature, gate, coalescing writer);
3. single-reading requests: requests/s and latency percentiles.
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psutil
import psycopg

from bench.common import (
    SECRET_KEY,
    ceiling_rows,
    data_points,
    raw_copy,
    scratch_database,
    seed_registry,
)
from bench.cpu import Meter, backends, bound
from ingest.http.signatures import sign

OUT_DIR = Path(__file__).resolve().parent / "out"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """`vitals serve` as a subprocess on a free port, stopped with SIGTERM."""

    def __init__(self, url: str, workers: int = 1) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        OUT_DIR.mkdir(exist_ok=True)
        self.log_path = OUT_DIR / "http-serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
        env.update({"VITALS_DATABASE_URL": url, "VITALS_SECRET_KEY": SECRET_KEY})
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(self.port)]
            + ["--workers", str(workers)],
            env=env,
            stdout=self.log,
            stderr=self.log,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"vitals serve exited; see {self.log_path}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"vitals serve not ready after {timeout} s; see {self.log_path}")

    def processes(self) -> list[int]:
        """`vitals serve` and its worker processes."""
        proc = psutil.Process(self.proc.pid)
        return [proc.pid] + [c.pid for c in proc.children(recursive=True)]

    def metric(self, name: str, labels: str) -> float:
        text = httpx.get(f"{self.base}/metrics").text
        m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


def post(client: httpx.Client, pid: str, secret: str, body: bytes) -> httpx.Response:
    r = client.post(
        f"/v1/providers/{pid}/readings",
        content=body,
        headers={"Content-Type": "application/json", "Vitals-Signature": sign(secret, body)},
    )
    if r.status_code != 200:
        raise SystemExit(f"HTTP {r.status_code}: {r.text[:300]}")
    return r


def batched(
    server: Server, pid: str, secret: str, bodies: list[bytes], clients: int
) -> tuple[float, int]:
    """Every body once, from `clients` concurrent keep-alive connections. (seconds, accepted)

    The load generator shares the 2 cores with the server, so it is kept cheap:
    bodies are signed before the clock starts (a signature is valid for 300 s)
    and sent with the standard library's http.client (httpx parses in Python)."""
    work: queue.SimpleQueue[tuple[bytes, str]] = queue.SimpleQueue()
    for b in bodies:
        work.put((b, sign(secret, b)))
    accepted = [0] * clients
    errors: list[BaseException] = []
    path = f"/v1/providers/{pid}/readings"

    def client_loop(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        try:
            while True:
                try:
                    body, signature = work.get_nowait()
                except queue.Empty:
                    return
                conn.request(
                    "POST",
                    path,
                    body,
                    {"Content-Type": "application/json", "Vitals-Signature": signature},
                )
                r = conn.getresponse()
                answer = r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {answer[:300]!r}")
                accepted[i] += orjson.loads(answer)["accepted"]
        except BaseException as e:  # reported after the run
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"a client failed: {errors[0]!r}")
    return elapsed, sum(accepted)


def singles(
    server: Server, pid: str, secret: str, bodies: list[bytes], clients: int
) -> tuple[float, list[float]]:
    """One reading per request. (seconds, per-request latencies)"""
    work: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for b in bodies:
        work.put(b)
    latencies: list[float] = []
    lock = threading.Lock()

    def client_loop() -> None:
        mine = []
        with httpx.Client(base_url=server.base, timeout=30) as client:
            while True:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    break
                t0 = time.perf_counter()
                post(client, pid, secret, body)
                mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=250_000)
    ap.add_argument("--batch", type=int, default=1_000)
    # Four partner connections keep both committers and the parser busy; two
    # leave a core idle while each client waits for its answer.
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--subjects", type=int, default=1_000)
    # Two worker processes: one holds its GIL about half the time under load.
    ap.add_argument("--workers", type=int, default=2, help="vitals serve --workers")
    ap.add_argument("--single", type=int, default=2_000, help="single-reading requests per run")
    ap.add_argument("--single-clients", default="1,16", help="concurrency levels, comma-separated")
    args = ap.parse_args()
    n = args.readings

    with scratch_database("vitals_bench_http") as url:
        pid, refs, secret = seed_registry(url, args.subjects)
        points = data_points(n, refs)
        bodies = [orjson.dumps(points[i : i + args.batch]) for i in range(0, n, args.batch)]

        # The rows the gate will store, for the raw COPY ceiling.
        rows = ceiling_rows(url, pid, points, prefix="")
        copy_s = raw_copy(url, rows)
        with psycopg.connect(url) as conn:
            conn.execute("TRUNCATE readings")
            conn.commit()

        server = Server(url, args.workers)
        try:
            server.wait_ready()
            tx_before = server.metric("vitals_batch_readings_count", 'transport="http"')
            meter = Meter(
                driver=[os.getpid()], serve=server.processes, postgres=lambda: backends(url)
            ).start()
            http_s, accepted = batched(server, pid, secret, bodies, args.clients)
            meter.stop()
            transactions = server.metric("vitals_batch_readings_count", 'transport="http"')
            transactions -= tx_before
            if accepted != n:
                raise SystemExit(f"only {accepted} of {n} readings accepted")
            with psycopg.connect(url) as conn:
                stored = conn.execute("SELECT count(*) FROM readings").fetchone()
            assert stored is not None and stored[0] == len(rows), (stored, len(rows))

            single_runs = []
            offset = 0
            later = datetime.now(UTC) - timedelta(hours=2)
            for level in (int(x) for x in args.single_clients.split(",") if x.strip()):
                extra = data_points(args.single, refs, start=later)
                for i, point in enumerate(extra):
                    point["header"]["id"] = f"single-{offset + i}"
                offset += args.single
                one_bodies = [orjson.dumps(point) for point in extra]
                before = server.metric("vitals_batch_readings_count", 'transport="http"')
                secs, lat = singles(server, pid, secret, one_bodies, level)
                txs = server.metric("vitals_batch_readings_count", 'transport="http"') - before
                single_runs.append((level, secs, lat, txs))
        finally:
            code = server.stop()
        if code != 0:
            raise SystemExit(f"vitals serve exited {code} on SIGTERM; see {server.log_path}")

    copy_rate, http_rate = n / copy_s, n / http_s
    print(
        f"HTTP webhook benchmark: {n:,} readings, batches of {args.batch:,}, "
        f"{args.clients} concurrent clients, against `vitals serve --workers {args.workers}`"
    )
    print(f"{'stage':<34}{'readings':>10}{'rows':>10}{'seconds':>10}{'readings/s':>14}")
    print(
        f"{'raw COPY into readings (ceiling)':<34}{n:>10}{len(rows):>10}{copy_s:>10.2f}"
        f"{copy_rate:>14,.0f}"
    )
    print(f"{'HTTP signed batches':<34}{n:>10}{len(rows):>10}{http_s:>10.2f}{http_rate:>14,.0f}")
    print(
        f"ratio HTTP / raw COPY: {http_rate / copy_rate:.2f} (target >= 0.5); "
        f"{len(bodies)} requests committed in {transactions:.0f} transactions"
    )
    print(f"CPU per reading, HTTP signed batches: {meter.per_reading(n)}")
    print(bound(copy_s, sum(meter.used.values())))
    print()
    print(
        f"{'single-reading requests':<34}{'requests':>10}{'req/s':>10}{'p50 ms':>10}"
        f"{'p99 ms':>10}{'max ms':>10}{'commits':>10}"
    )
    for level, secs, lat, txs in single_runs:
        label = f"{level} concurrent client{'s' if level > 1 else ''}"
        print(
            f"{label:<34}{len(lat):>10}{len(lat) / secs:>10,.0f}"
            f"{percentile(lat, 50) * 1000:>10.1f}{percentile(lat, 99) * 1000:>10.1f}"
            f"{max(lat) * 1000:>10.1f}{txs:>10.0f}"
        )


if __name__ == "__main__":
    main()
