"""Marketing audiences (CONTRACT.md v2, "Flows"): who in a derived group may
be marketed to, for the company itself or for one partner.

`$VITALS_EXPORT_DIR/audiences/<audience_id>/members.parquet` (one string
column `member`) and `_manifest.json` (files, rows, sha256, the rules
applied, the cut-off), written last.

Members: subjects in GROUP at the cut-off (an open membership still backed
by an analytics consent), holding an unwithdrawn `marketing` consent that
covers the cut-off and no unlifted `marketing` objection. Without a partner
`member` is the subject id (the company's own marketing). With `--partner`
(agreed for purpose `marketing`): also no unlifted `disclosure` objection,
general or for that partner, FI residents only for a partner in region FI,
and `member` is the partner's pseudonym of the person
(`store.partners.partner_pseudonym`), sorted, so lists of two partners
cannot be lined up by position; every member is logged as disclosed to the
partner (the access extract shows it; erasure and objection then owe the
partner a notice).

One REPEATABLE READ transaction whose start is the cut-off
(`store.exports.export_snapshot`, holding the shared erasure lock): an
objection or withdrawal committed before the run starts is seen; members
stream through server-side cursors (bounded memory). The SQL is in
`store.audiences`.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.errors import InputError
from core.outputs import (
    PSEUDONYM_CHARS,
    OutputRoot,
    file_entry,
    schema_doc,
    staging,
    write_manifest,
)
from flows import common
from flows.groups import load_rules
from store import audiences as queries
from store import partners
from store.db import connect, translate_errors
from store.exports import export_snapshot
from store.registry import audit

FORMAT = "vitals-audience/1"
MEMBERS_SCHEMA = pa.schema([pa.field("member", pa.string(), nullable=False)])

RULES = [
    "subjects in the group at the cut-off: an open membership of the current rule set, "
    "backed by an unwithdrawn analytics consent",
    "an unwithdrawn marketing consent covering the cut-off",
    "no unlifted marketing objection",
    "active subjects only (none being erased, none whose relationship ended)",
]
PARTNER_RULES = [
    "the partner is agreed for purpose marketing",
    "no unlifted disclosure objection, general or for this partner",
    "FI residents only when the partner's region is FI",
]


def _partner(database_url: str, partner_id: str) -> dict[str, Any]:
    with translate_errors(), connect(database_url) as conn:
        partner = partners.get_partner(conn, partner_id)
    partners.require_purpose(partner, "marketing")
    return partner


def run_audience(
    database_url: str,
    master: bytes,
    export_dir: Path | str,
    group: str,
    partner_id: str | None = None,
    *,
    actor: str = "flows.audience",
    batch_rows: int = 10_000,
) -> dict[str, Any]:
    """Write one audience and record it; returns audience_id, members, path."""
    if group not in load_rules().groups:
        raise InputError("unknown_group", f"no group {group!r} in the current rule set")
    partner = _partner(database_url, partner_id) if partner_id is not None else None
    pid: uuid.UUID | None = partner["partner_id"] if partner else None
    region: str | None = partner["region"] if partner else None

    def name(sid: uuid.UUID) -> str:
        return partners.partner_pseudonym(master, pid, sid) if pid else str(sid)

    with (
        staging(OutputRoot.at(export_dir).child("audiences")) as out,
        export_snapshot(database_url) as (conn, cutoff),
    ):
        audience_id = f"{cutoff:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
        root = out.begin(audience_id)
        members = queries.select_members(conn, cutoff, group, pid, region)
        queries.name_members(conn, name, batch_rows)
        path = "members.parquet"
        written = 0
        with (
            pq.ParquetWriter(
                root.create(path), MEMBERS_SCHEMA, compression="zstd", filesystem=root.fs
            ) as writer,
            queries.members(conn, batch_rows) as batches,
        ):
            for batch in batches:
                writer.write_table(pa.table({"member": batch}, schema=MEMBERS_SCHEMA))
                written += len(batch)
        assert written == members
        final = out.location
        write_manifest(
            root,
            {
                "format": FORMAT,
                "audience_id": audience_id,
                "group": group,
                "partner_id": str(pid) if pid else None,
                "partner_region": region,
                "cutoff": cutoff.isoformat(),
                "created_at": datetime.now(UTC).isoformat(),
                "rules": RULES + (PARTNER_RULES if pid else []),
                "member": (
                    "the partner's pseudonym of the person: HMAC-SHA256 of the subject id "
                    f"under a key derived for this partner, first {PSEUDONYM_CHARS} hex "
                    "chars; stable for this partner, different for every other"
                    if pid
                    else "the subject id (the company's own marketing; never sent out)"
                ),
                "schema": {"members": schema_doc(MEMBERS_SCHEMA)},
                "rows": {"members": members},
                "files": [file_entry(root, path, members, "members")],
            },
        )
        queries.record_audience(
            conn,
            audience_id=audience_id,
            group=group,
            partner_id=pid,
            cutoff=cutoff,
            path=final,
            members=members,
            actor=actor,
        )
        audit(
            conn,
            actor,
            "audience.create",
            None,
            audience_id=audience_id,
            group=group,
            partner_id=str(pid) if pid else None,
            members=members,
            cutoff=cutoff.isoformat(),
            path=final,
        )
        out.publish()
    if pid is not None:
        common.notify_late_objections(database_url, master, audience_id)
    return {"audience_id": audience_id, "members": members, "path": final}


# Prefect ----------------------------------------------------------------------


@task(
    name="write-audience",
    retries=1,
    retry_delay_seconds=[30],
    retry_condition_fn=common.transient_failure,
    cache_policy=NO_CACHE,
)
def audience_task(group: str, partner_id: str | None, actor: str) -> dict[str, Any]:
    from core.settings import Settings

    settings = Settings()
    return run_audience(
        settings.require_database_url(),
        settings.require_secret_key(),
        settings.export_dir,
        group,
        partner_id,
        actor=actor,
    )


@flow(name="vitals-audience", description="A marketing audience from a derived group.")
def audience_flow(
    group: str, partner_id: str | None = None, actor: str = "prefect"
) -> dict[str, Any]:
    result = audience_task(group, partner_id, actor)
    get_run_logger().info("audience %s: %s members", result["audience_id"], result["members"])
    return result
