"""`vitals serve --workers 2`: worker processes on the same listeners, metrics
added up across them, every answered reading committed, nothing left behind."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from tests.support.http import count, make_world
from tests.support.net import free_port
from tests.support.seed import data_point
from tests.support.serve import ServeProcess, serve_env


def _accepted_metric(text: str) -> float:
    total = 0.0
    for m in re.finditer(r"^vitals_readings_total\{([^}]*)\} (\S+)$", text, re.M):
        labels = m.group(1)
        if 'transport="http"' in labels and 'status="accepted"' in labels:
            total += float(m.group(2))
    return total


def test_two_workers_share_the_listeners_and_drain_on_sigterm(
    db_url: str, conn: psycopg.Connection, master_key: bytes, tmp_path: Path
) -> None:
    world = make_world(conn, master_key)
    admin_port = free_port()
    env = serve_env(db_url, VITALS_SECRET_KEY=master_key.decode())
    serve = ServeProcess(env, "--workers", "2", "--admin-port", str(admin_port), tmp=tmp_path)
    with serve:
        assert serve.process is not None
        parent = psutil.Process(serve.process.pid)
        everything = parent.children(recursive=True)
        workers = [
            p for p in parent.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())
        ]
        assert len(workers) == 2, [p.cmdline() for p in parent.children(recursive=True)]
        metrics_dirs = {w.environ().get("PROMETHEUS_MULTIPROC_DIR") for w in workers}
        assert len(metrics_dirs) == 1 and None not in metrics_dirs
        [metrics_dir] = metrics_dirs

        def push(i: int) -> int:
            # A new connection per batch: the kernel hands them to either worker.
            points = [
                data_point(world.user_ref, value=50 + j % 40, id=f"w{i}-{j}") for j in range(25)
            ]
            r = serve.post_readings(world, points)
            assert r.status_code == 200, r.text
            return int(r.json()["accepted"])

        with ThreadPoolExecutor(8) as pool:
            accepted = sum(pool.map(push, range(40)))
        assert accepted == 40 * 25
        # Both workers committed readings, and /metrics adds their counters up.
        served_by = {f.name.rsplit("_", 1)[-1] for f in Path(metrics_dir).glob("counter_*.db")}
        assert len(served_by) == 2, served_by
        text = httpx.get(serve.url("/metrics", admin_port), timeout=10).text
        assert _accepted_metric(text) == accepted
        # The public listener serves the webhook only, in every worker.
        assert httpx.get(serve.url("/metrics"), timeout=10).status_code == 404
    assert serve.process is not None and serve.process.returncode == 0, serve.stderr_text()
    _, alive = psutil.wait_procs(everything, timeout=10)
    assert not alive, f"outlived vitals serve: {[p.cmdline() for p in alive]}"
    assert not Path(metrics_dir).exists()
    assert count(conn, "readings", "provider_id = %s", (world.provider_id,)) == accepted
    log = serve.stderr_text()
    assert world.user_ref not in log


@pytest.mark.parametrize("workers", ["0", "65"])
def test_a_worker_count_out_of_range_is_refused(db_url: str, workers: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--port", str(free_port()), "--workers", workers],
        env=serve_env(db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--workers" in proc.stderr
