"""Provider registration with its broker account: the registry plus Mosquitto.

The registry rows live in `store.registry`; the broker account (dynamic
security) in `ingest.broker.accounts`. Both functions run in the caller's
transaction, which the caller commits: a broker error raises before that
commit, so the database is left unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store import registry
from store.db import Connection


def add_provider(
    conn: Connection,
    master: bytes,
    name: str,
    types: Sequence[str],
    actor: str,
    mqtt_admin_url: str | None = None,
) -> dict[str, Any]:
    """Register a provider; with `mqtt_admin_url`, also create its broker account
    (publish only to its readings topic, read only its rejections topic)."""
    result = registry.add_provider(conn, master, name, types, actor)
    if mqtt_admin_url:
        from ingest.broker.accounts import create_provider_client

        mqtt = create_provider_client(mqtt_admin_url, result["provider_id"])
        registry.set_provider_mqtt(conn, result["provider_id"], mqtt["username"])
        result["mqtt"] = mqtt
    return result


def set_provider_status(
    conn: Connection,
    provider_id: str,
    status: str,
    actor: str,
    mqtt_admin_url: str | None = None,
) -> dict[str, Any]:
    """Activate, suspend or remove a provider. With `mqtt_admin_url`, its broker
    account follows: disabled when suspended or removed (live connections are
    dropped), enabled again when active. A broker error leaves the database
    unchanged (the caller's transaction is not committed)."""
    result = registry.set_provider_status(conn, provider_id, status, actor)
    if mqtt_admin_url:
        provider = registry.get_provider(conn, result["provider_id"])
        if provider is not None and provider["mqtt_username"]:
            from ingest.broker import accounts as broker_accounts

            if status == "active":
                broker_accounts.enable_provider_client(mqtt_admin_url, result["provider_id"])
            else:
                broker_accounts.disable_provider_client(mqtt_admin_url, result["provider_id"])
    return result
