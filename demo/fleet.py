"""The demo's fleet: 3 providers and 300 devices/subjects with mixed consents
and residencies, registered in the database, and their simulated readings."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from demo.simulator import PROFILES, bad_payloads, device_day
from ingest.providers import add_provider
from store import registry
from store.db import connect

DEVICES = 300
DAYS = 30
# name, types, transport (HTTP for every provider when there is no broker)
PROVIDERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
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
)

Registered = list[tuple[dict[str, Any], tuple[str, ...], str]]


def register(
    db_url: str, master: bytes, broker: dict[str, str] | None, rng: random.Random
) -> tuple[Registered, list[dict[str, Any]]]:
    """Register the providers (with broker accounts for MQTT ones when there is a
    broker) and DEVICES subjects, one device each, in one transaction. Returns
    the providers as (provider, types, transport) and the devices."""
    devices: list[dict[str, Any]] = []
    with connect(db_url) as conn:
        registered: Registered = []
        for name, types, transport in PROVIDERS:
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
    return registered, devices


def readings(
    rng: random.Random, devices: list[dict[str, Any]]
) -> tuple[dict[str, list[list[dict[str, Any]]]], int]:
    """Every device's readings for the last DAYS days (some with bad payloads)
    and a few from devices nobody linked, in chunks of 100 per provider id.
    Returns the chunks and how many data points they hold."""
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
    return batches, total


def withdraw(db_url: str, devices: list[dict[str, Any]]) -> None:
    """Withdraw the collection consent of `devices`, in one transaction."""
    with connect(db_url) as conn:
        for d in devices:
            registry.withdraw_consent(conn, d["consents"]["collection"], "demo")
        conn.commit()


PARTNER = ("acme-insights", "EU", ("marketing", "disclosure"), ("heart-rate", "blood-pressure"))


def purposes(
    db_url: str, master: bytes, devices: list[dict[str, Any]], rng: random.Random
) -> dict[str, Any]:
    """The v2 purposes: one partner (marketing and disclosure of heart rate and
    blood pressure), marketing consent for about half of the subjects, and a
    few objections (a marketing one, a disclosure one), in one transaction."""
    from store import objections, partners

    name, region, purposes_, types = PARTNER
    with connect(db_url) as conn:
        partner_id = partners.add_partner(conn, name, region, purposes_, types, "demo")[
            "partner_id"
        ]
        marketing = [d for d in devices if rng.random() < 0.5]
        for d in marketing:
            registry.grant_consent(conn, d["subject"], "marketing", "demo")
        objected = {"marketing": marketing[:3], "disclosure": devices[-4:]}
        for purpose, who in objected.items():
            for d in who:
                objections.add_objection(conn, master, d["subject"], purpose, "demo")
        conn.commit()
    return {
        "partner_id": partner_id,
        "marketing_consents": len(marketing),
        "objections": {k: len(v) for k, v in objected.items()},
    }
