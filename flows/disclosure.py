"""Disclosures of readings to a partner (CONTRACT.md v2, "Flows").

`$VITALS_EXPORT_DIR/disclosures/<disclosure_id>/readings/type=<type>/date=<YYYY-MM-DD>/*.parquet`
in the export's long format (`core.longformat`), `pseudonym` being the
partner's pseudonym of the person (the same as in that partner's
audiences), and `_manifest.json` written last.

What goes out: readings of the partner's agreed `--types` only (never
geoposition, coordinates or erroneous readings), of active subjects with no
unlifted `disclosure` objection, general or for this partner; FI residents
only to a partner in region FI. Disclosure is the privacy notice's "we
disclose data to partners unless you forbid it": it needs no consent of its
own beyond the `collection` consent the readings were stored under, and an
objection is what stops it (README, "Purposes"). The partner must be agreed
for purpose `disclosure`.

Every subject disclosed gets a log row (time, partner, rows per type) in the
same transaction as the files' snapshot; the access extract shows it, and
erasure or a later objection owes the partner a notice (GDPR Art. 19).
Readings stream out of a COPY in bounded memory; one REPEATABLE READ
transaction holding the shared erasure lock (`store.exports.export_snapshot`).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.errors import InputError
from core.longformat import READINGS_SCHEMA, Progress, write_readings
from core.outputs import PSEUDONYM_CHARS, OutputRoot, schema_doc, staging, write_manifest
from flows import common
from store import disclosures as queries
from store import partners
from store.db import connect, translate_errors
from store.exports import export_snapshot
from store.registry import audit

FORMAT = "vitals-disclosure/1"
RULES = [
    "the partner is agreed for purpose disclosure",
    "readings of the partner's agreed types only; never geoposition, coordinates "
    "or erroneous readings",
    "active subjects with no unlifted disclosure objection, general or for this partner",
    "FI residents only to a partner in region FI",
    "readings stored (received and effective) by the cut-off",
]


def run_disclosure(
    database_url: str,
    master: bytes,
    export_dir: Path | str,
    partner_id: str,
    *,
    actor: str = "flows.disclosure",
    progress: Progress | None = None,
    block_size: int = 1 << 20,
    rows_per_file: int = 1_000_000,
) -> dict[str, Any]:
    """Write one disclosure and record it; returns disclosure_id, path, rows, subjects."""
    with translate_errors(), connect(database_url) as conn:
        partner = partners.get_partner(conn, partner_id)
    partners.require_purpose(partner, "disclosure")
    if not partner["types"]:
        raise InputError("partner_types", "the partner has no agreed data types (--types)")
    pid, region, types = partner["partner_id"], partner["region"], list(partner["types"])

    with (
        staging(OutputRoot.at(export_dir).child("disclosures")) as out,
        export_snapshot(database_url) as (conn, cutoff),
    ):
        disclosure_id = f"{cutoff:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
        root = out.begin(disclosure_id)
        ids = queries.eligible_subjects(conn, pid, region, types)
        queries.load_pseudonyms(
            conn, {sid: partners.partner_pseudonym(master, pid, sid) for sid in ids}
        )
        root.ensure("readings")
        with queries.readings_csv(conn, cutoff, types) as chunks:
            files, _seen = write_readings(chunks, root, progress, block_size, rows_per_file)
        rows = sum(f["rows"] for f in files)
        final = out.location
        subjects = queries.record_disclosure(
            conn,
            disclosure_id=disclosure_id,
            partner_id=pid,
            types=types,
            cutoff=cutoff,
            path=final,
            row_count=rows,
            actor=actor,
        )
        write_manifest(
            root,
            {
                "format": FORMAT,
                "disclosure_id": disclosure_id,
                "partner_id": str(pid),
                "partner_region": region,
                "types": types,
                "cutoff": cutoff.isoformat(),
                "created_at": datetime.now(UTC).isoformat(),
                "rules": RULES,
                "pseudonym": "the partner's pseudonym of the person: HMAC-SHA256 of the "
                f"subject id under a key derived for this partner, first {PSEUDONYM_CHARS} "
                "hex chars; the same as in this partner's audiences",
                "partitioning": "readings/type=<type>/date=<YYYY-MM-DD> (hive, UTC dates)",
                "schema": {"readings": schema_doc(READINGS_SCHEMA)},
                "rows": {"readings": rows},
                "subject_count": subjects,
                "files": files,
            },
        )
        audit(
            conn,
            actor,
            "disclosure.partner",
            None,
            disclosure_id=disclosure_id,
            partner_id=str(pid),
            types=types,
            subject_count=subjects,
            row_count=rows,
            cutoff=cutoff.isoformat(),
            path=final,
        )
        out.publish()
    common.notify_late_objections(database_url, master, disclosure_id)
    return {
        "disclosure_id": disclosure_id,
        "partner_id": str(pid),
        "path": final,
        "rows": rows,
        "subjects": subjects,
        "files": len(files),
    }


# Prefect ----------------------------------------------------------------------


@task(
    name="write-disclosure",
    retries=1,
    retry_delay_seconds=[30],
    retry_condition_fn=common.transient_failure,
    cache_policy=NO_CACHE,
)
def disclosure_task(partner_id: str, actor: str) -> dict[str, Any]:
    from core.settings import Settings

    settings = Settings()
    return run_disclosure(
        settings.require_database_url(),
        settings.require_secret_key(),
        settings.export_dir,
        partner_id,
        actor=actor,
    )


@flow(name="vitals-disclosure", description="Readings disclosed to a partner.")
def disclosure_flow(partner_id: str, actor: str = "prefect") -> dict[str, Any]:
    result = disclosure_task(partner_id, actor)
    get_run_logger().info(
        "disclosure %s to %s: %s rows of %s subjects",
        result["disclosure_id"],
        result["partner_id"],
        result["rows"],
        result["subjects"],
    )
    return result
