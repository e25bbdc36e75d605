"""Audited reads for the admin API: providers, tokens, subjects and their
consent history, the audit log itself, and the export log. Each read is
recorded in the audit log as it happens.

One transaction convention: every function takes an open connection and runs
in its caller's transaction (the read and its audit row commit together, or
neither does); the caller commits. Bad input raises `InputError` (`NotFound`
for a missing thing).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.errors import InputError, NotFound
from store import registry
from store.db import q

# What a provider's admin view shows (never its encrypted webhook secret).
PUBLIC_PROVIDER = ("provider_id", "name", "types", "mqtt_username", "status", "created_at")


def _rows(
    conn: psycopg.Connection, name: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q(name), params).fetchall()


def providers(conn: psycopg.Connection, actor: str) -> list[dict[str, Any]]:
    rows = _rows(conn, "list_providers")
    registry.audit(conn, actor, "provider.list")
    return rows


def provider(conn: psycopg.Connection, provider_id: str, actor: str) -> dict[str, Any]:
    row = registry.get_provider(conn, provider_id)
    if row is None:
        raise NotFound("provider", provider_id)
    registry.audit(conn, actor, "provider.read", provider_id=str(row["provider_id"]))
    return {k: row[k] for k in PUBLIC_PROVIDER}


def tokens(conn: psycopg.Connection, actor: str) -> list[dict[str, Any]]:
    """Every token with its id, name, role and times; never the token itself."""
    rows = _rows(conn, "list_tokens")
    registry.audit(conn, actor, "token.list")
    return rows


def subject(conn: psycopg.Connection, subject_id: str, actor: str) -> dict[str, Any]:
    """The subject and its links."""
    row = registry.get_subject(conn, subject_id)
    registry.audit(conn, actor, "subject.read", row["subject_id"])
    return row


def consent_history(conn: psycopg.Connection, subject_id: str, actor: str) -> list[dict[str, Any]]:
    """The subject's consents, grants and withdrawals (append-only)."""
    found = registry.get_subject(conn, subject_id)
    rows = registry.consent_history(conn, found["subject_id"])
    registry.audit(conn, actor, "consent.read", found["subject_id"])
    return rows


def audit_log(
    conn: psycopg.Connection,
    master: bytes,
    actor: str,
    *,
    by_actor: str | None = None,
    action: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Audit entries, newest first, filtered by who (`by_actor`), what, which
    subject, when, and paged by `before` (an audit id). The search itself is
    audited with its filters."""
    for t in (since, until):
        if t is not None and t.tzinfo is None:
            raise InputError("invalid_time", "since/until need a UTC offset (e.g. Z)")
    params: dict[str, Any] = {
        "actor": by_actor,
        "action": action,
        "subject_ref": None,
        "since": since,
        "until": until,
        "before": before,
        "limit": limit,
    }
    # A subject id in any case or form is searched (and recorded) as the log
    # names it: the canonical id, or its keyed hash once erased.
    if subject is not None:
        params["subject_ref"] = registry.audit_subject_ref(conn, master, subject)
    rows = _rows(conn, "search_audit", params)
    filters = {k: str(v) for k, v in params.items() if v is not None and k != "limit"}
    registry.audit(conn, actor, "audit.read", params["subject_ref"], filters=filters)
    return rows


def exports(conn: psycopg.Connection, actor: str) -> list[dict[str, Any]]:
    """Every export, newest first, without where its files are."""
    rows = _rows(conn, "list_exports")
    registry.audit(conn, actor, "export.list")
    return [{k: v for k, v in r.items() if k != "path"} for r in rows]


def export(conn: psycopg.Connection, export_id: str, actor: str) -> dict[str, Any]:
    """One export, with `path`: the directory of its files and `_manifest.json`."""
    rows = _rows(conn, "get_export", {"export_id": export_id})
    if not rows:
        raise NotFound("export", export_id)
    registry.audit(conn, actor, "export.read", export_id=export_id)
    return rows[0]
