"""The TimescaleDB tier: a WASM TimescaleDB (PGlite) served on the wire protocol.

`make test-timescale` installs deploy/timescale/node_modules and runs this
folder with `-m timescale`; a plain `pytest` deselects it (pyproject addopts).
The server is one shared backend session: the tier uses one connection at a
time, autocommit, no server-side prepared statements.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from store.migrate import migrate

ROOT = Path(__file__).resolve().parents[2]
SERVER_DIR = ROOT / "deploy" / "timescale"
START_TIMEOUT = 90.0


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str, lines: list[str]) -> None:
        self.proc = proc
        self.url = url
        self.lines = lines  # everything it printed, for failure messages


def _pump(stream: object, out: queue.Queue[str], lines: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line.rstrip("\n"))
        out.put(line)


@pytest.fixture(scope="session")
def timescale_server() -> Iterator[Server]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("the TimescaleDB tier needs Node.js 18+ (apt-get install nodejs npm)")
    if not (SERVER_DIR / "node_modules" / "@unni-craftsman" / "pglite").is_dir():
        pytest.fail(
            "deploy/timescale/node_modules is missing: run `make test-timescale` "
            "(it runs `npm ci` there)"
        )
    proc = subprocess.Popen(
        [node, "server.mjs", "--host", "127.0.0.1", "--port", "0"],
        cwd=SERVER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    lines: list[str] = []
    out: queue.Queue[str] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(proc.stdout, out, lines), daemon=True)
    pump.start()
    url = None
    deadline = time.monotonic() + START_TIMEOUT
    while url is None:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            _stop(proc, pump)
            pytest.fail("the WASM TimescaleDB server did not start:\n" + "\n".join(lines))
        try:
            line = out.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if line.startswith("READY "):
            url = line.split(" ", 1)[1].strip()
    try:
        yield Server(proc, url, lines)
    finally:
        _stop(proc, pump)
        assert proc.returncode == 0, "server did not stop cleanly:\n" + "\n".join(lines)


def _stop(proc: subprocess.Popen[str], pump: threading.Thread) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    pump.join(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="session")
def migrated(timescale_server: Server) -> dict[str, object]:
    """Every migration applied by the project's migrator, before any test connects."""
    started = time.monotonic()
    names = migrate(timescale_server.url)
    return {"names": names, "seconds": time.monotonic() - started}


@pytest.fixture(scope="session")
def ts(timescale_server: Server, migrated: dict[str, object]) -> Iterator[psycopg.Connection]:
    """The one connection of the tier (PGlite has one shared session anyway)."""
    with psycopg.connect(timescale_server.url, autocommit=True, prepare_threshold=None) as conn:
        # Not UTC on purpose: day buckets must not follow the session time zone.
        conn.execute("SET TimeZone = 'Europe/Helsinki'")
        yield conn
