"""`vitals mqtt` as tests run it: a subprocess on a private broker, providers
with broker accounts, readings to publish, what was stored. Also a pytest
plugin (registered in tests/conftest.py): the `ingesters` factory and an
`ingester` already subscribed, on the test's own `broker`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest.broker.accounts import create_provider_client
from ingest.broker.config import ingester_client_id
from tests.support import seed
from tests.support.mqtt import Broker, publish_qos1
from tests.support.net import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Provider:
    id: str
    url: str  # its MQTT account
    topic: str  # vitals/v1/{id}/readings
    rejections: str  # vitals/v1/{id}/rejections
    password: str


def new_provider(
    conn: psycopg.Connection,
    master_key: bytes,
    broker: Broker,
    *,
    user_ref: str = "alice",
    consent: bool = True,
) -> Provider:
    """A registered provider with a broker account and one linked subject."""
    pid = seed.provider(conn, master_key, ("heart-rate", "blood-pressure"))["provider_id"]
    creds = create_provider_client(broker.admin_url, pid)
    sid = seed.subject(conn, pid, user_ref)
    if consent:
        seed.consent(conn, sid, provider_id=pid, types=["heart-rate", "blood-pressure"])
    return Provider(
        pid,
        broker.url(creds["username"], creds["password"]),
        creds["topic"],
        f"vitals/v1/{pid}/rejections",
        creds["password"],
    )


def points(n: int, user_ref: str = "alice", prefix: str | None = None) -> list[dict[str, Any]]:
    prefix = prefix or uuid.uuid4().hex[:8]
    return [seed.data_point(user_ref, id=f"{prefix}-{i}", value=60 + i % 40) for i in range(n)]


def messages(data: Sequence[object], per: int) -> list[bytes]:
    """Data points as JSON arrays of `per` (one object when per == 1)."""
    if per == 1:
        return [json.dumps(p).encode() for p in data]
    return [json.dumps(list(data[i : i + per])).encode() for i in range(0, len(data), per)]


def stored(db_url: str) -> tuple[int, int]:
    """(reading rows, distinct reading ids) committed so far."""
    with psycopg.connect(db_url, autocommit=True) as c:
        row = c.execute("SELECT count(*), count(DISTINCT reading_id) FROM readings").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_stored(db_url: str, n: int, timeout: float) -> None:
    last: list[tuple[int, int]] = []

    def enough() -> bool:
        last[:] = [stored(db_url)]
        return last[0][0] >= n

    try:
        wait_for(enough, timeout, f"{n} stored readings", step=0.2)
    except TimeoutError as e:
        raise TimeoutError(f"{e}; stored (rows, distinct ids) = {last}") from None


class IngesterProcess:
    """`vitals mqtt` as a subprocess, with its metrics endpoint for assertions."""

    def __init__(
        self,
        env: dict[str, str],
        broker: Broker,
        log_dir: Path,
        *,
        instance: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.env = {**env, "VITALS_MQTT_URL": broker.ingester_url}
        self.broker = broker
        self.instance = instance or uuid.uuid4().hex[:8]
        self.args = list(args)
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.runs = 0

    @property
    def client_id(self) -> str:
        return ingester_client_id(self.broker.ingester_url, self.instance)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"ingester-{self.instance}-{self.runs}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 20.0) -> IngesterProcess:
        self.runs += 1
        self.metrics_port = free_port()
        command = [sys.executable, "-m", "cli", "mqtt", "--instance", self.instance]
        command += ["--metrics-port", str(self.metrics_port), *self.args]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for(self.subscribed, timeout, "the ingester to connect and subscribe")
        except TimeoutError:
            self.kill()
            raise AssertionError(f"ingester did not come up; log:\n{self.log()[-4000:]}") from None
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> dict[str, float]:
        """Every sample as `name{k="v",...}` → value (labels sorted)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (local)
            text = response.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return self.metrics().get(f"{name}{{{label_text}}}" if labels else name, 0.0)

    def subscribed(self) -> bool:
        if not self.alive():
            raise AssertionError(f"ingester exited early; log:\n{self.log()[-4000:]}")
        try:
            return self.metric("vitals_mqtt_connected") == 1.0
        except OSError:
            return False

    def rss_mb(self) -> float:
        assert self.process is not None
        return float(psutil.Process(self.process.pid).memory_info().rss) / 2**20

    def terminate(self, timeout: float = 40.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"ingester ignored SIGTERM for {timeout:g} s; log:\n{self.log()[-4000:]}"
            ) from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def ingesters(
    cli_env: dict[str, str], broker: Broker, tmp_path: Path
) -> Iterator[Callable[..., IngesterProcess]]:
    """Factory for `vitals mqtt` processes; all are killed at the end of the test."""
    made: list[IngesterProcess] = []

    def make(**kwargs: Any) -> IngesterProcess:
        proc = IngesterProcess(cli_env, broker, tmp_path, **kwargs)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill()


@pytest.fixture
def ingester(ingesters: Callable[..., IngesterProcess]) -> IngesterProcess:
    return ingesters().start()


class Publisher(threading.Thread):
    """Publishes in the background; `error` holds what went wrong, if anything."""

    def __init__(self, url: str, topic: str, payloads: list[bytes], timeout: float = 120) -> None:
        super().__init__(daemon=True)
        self.args = (url, topic, payloads, timeout)
        self.error: BaseException | None = None

    def run(self) -> None:
        url, topic, payloads, timeout = self.args
        try:
            acks = publish_qos1(url, topic, payloads, timeout=timeout)
            if any(rc.is_failure for rc in acks):
                raise AssertionError(f"broker refused a publish: {acks}")
        except BaseException as e:
            self.error = e

    def finish(self, timeout: float = 120) -> None:
        self.join(timeout)
        assert not self.is_alive(), "publisher still running"
        if self.error is not None:
            raise self.error
