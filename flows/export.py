"""Pseudonymised Parquet exports for analysts (CONTRACT.md, "Parquet exports").

Layout under `$VITALS_EXPORT_DIR/<export_id>/`:
  readings/type=<type>/date=<YYYY-MM-DD>/part-NNNNN.parquet   long format
  groups/part-00000.parquet                                   memberships
  _manifest.json                                              files, rows, sha256, schema, cut-off

`run_export` works in one REPEATABLE READ transaction whose start is the
cut-off: eligible subjects (unwithdrawn research consent covering the
cut-off; FI residents only in FI exports) get a pseudonym = HMAC-SHA256 of
their subject id under a fresh random per-export salt, kept in a temp table.
Readings stream out of PostgreSQL with COPY, ordered by type and time, are
parsed in blocks by pyarrow's CSV reader and written one partition at a
time: memory stays bounded whatever the size. Files go to a temp directory
that is renamed into place only when complete (on S3, written in place with
the manifest last: `core.outputs.staging`); the export, the subjects it
disclosed and an audit row are recorded in the same transaction. The SQL
(snapshot, lock, COPY streams, the record) is in `store.exports`.

Only what the research consent covers goes out: readings of its types (and
provider), and group memberships whose evidence types it covers entirely
(`flows.groups.EVIDENCE_TYPES`).

An export holds a shared advisory lock from before its snapshot until after
its commit, and erasure takes it exclusively before marking a subject
'erasing': an export either leaves an erased subject out, or commits first and
the erasure queues it for purge.

Locally files are created 0600 and directories 0700 (`core.outputs`):
exports hold health data of people. `export_dir` may be an `s3://bucket/prefix`
URL; the recorded path is then the export's URL.

For the purge (`vitals export purge`): the salt is stored encrypted in
`exports.salt_enc` (`export_salt` + `pseudonym` find a subject's rows again),
and `file_entry` / `write_manifest` rewrite a manifest after files change.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core import crypto
from core.errors import InputError
from core.longformat import READINGS_SCHEMA, UTC_US, Progress, write_readings
from core.outputs import (
    PSEUDONYM_CHARS,
    OutputRoot,
    file_entry,
    pseudonym,
    schema_doc,
    staging,
    write_manifest,
)
from flows import common
from flows.groups import EVIDENCE_TYPES, EVIDENCE_WITHOUT_TYPES
from store import exports as queries
from store.db import Connection
from store.registry import audit

REGIONS = ("FI", "EU")
FORMAT = "vitals-export/1"

GROUPS_SCHEMA = pa.schema(
    [
        pa.field("pseudonym", pa.string(), nullable=False),
        pa.field("group_key", pa.string(), nullable=False),
        pa.field("rule_version", pa.string(), nullable=False),
        pa.field("valid_from", UTC_US, nullable=False),
        pa.field("valid_until", UTC_US, nullable=True),
        pa.field("evidence", pa.string(), nullable=False),  # JSON: the aggregates that decided
    ]
)


def export_salt(conn: Connection, master: bytes, export_id: str) -> bytes:
    """The per-export salt, decrypted (for the purge to find a subject's rows)."""
    salt_enc = queries.encrypted_salt(conn, export_id)
    if salt_enc is None:
        raise InputError("not_found", f"export {export_id} does not exist")
    return crypto.decrypt(master, salt_enc)


def _evidence_types() -> dict[str, list[str] | None]:
    return EVIDENCE_TYPES | {key: [] for key in EVIDENCE_WITHOUT_TYPES}


def _write_groups(
    conn: Connection, root: OutputRoot, cutoff: datetime, batch_rows: int = 10_000
) -> tuple[list[dict[str, Any]], set[str]]:
    path = "groups/part-00000.parquet"
    seen: set[str] = set()
    rows = 0
    with (
        pq.ParquetWriter(
            root.create(path), GROUPS_SCHEMA, compression="zstd", filesystem=root.fs
        ) as writer,
        queries.group_memberships(conn, cutoff, _evidence_types(), batch_rows) as batches,
    ):
        for chunk in batches:
            columns = list(zip(*chunk, strict=True))
            table = pa.Table.from_arrays(
                [pa.array(col, type=f.type) for col, f in zip(columns, GROUPS_SCHEMA, strict=True)],
                schema=GROUPS_SCHEMA,
            )
            writer.write_table(table)
            seen.update(columns[0])
            rows += len(chunk)
    return [file_entry(root, path, rows, "groups")], seen


def run_export(
    database_url: str,
    master: bytes,
    export_dir: Path | str,
    region: str = "EU",
    *,
    actor: str = "flows.export",
    progress: Progress | None = None,
    block_size: int = 1 << 20,  # pyarrow reads blocks ahead in parallel: 4 MiB blocks
    # cost ~200 MB more peak RSS at 5M rows for no speed gain (bench.flows)
    rows_per_file: int = 1_000_000,
) -> dict[str, Any]:
    """Write one export and record it; returns export_id, path, rows, subjects, ..."""
    if region not in REGIONS:
        raise InputError("invalid_region", f"region must be FI or EU, not {region!r}")
    salt = secrets.token_bytes(32)
    # The shared erasure lock is held from before the snapshot until after
    # its commit (store.exports.export_snapshot).
    with (
        staging(export_dir) as out,
        queries.export_snapshot(database_url) as (conn, cutoff),
    ):
        export_id = f"{cutoff:%Y%m%dT%H%M%SZ}-{region.lower()}-{secrets.token_hex(4)}"
        ids = queries.eligible_subjects(conn, cutoff, region)
        by_pseudonym = {pseudonym(salt, sid): sid for sid in ids}
        queries.load_pseudonyms(conn, by_pseudonym)

        root = out.begin(export_id)
        root.ensure("readings")
        with queries.readings_csv(conn, cutoff) as chunks:
            files, seen = write_readings(chunks, root, progress, block_size, rows_per_file)
        group_files, group_seen = _write_groups(conn, root, cutoff)
        disclosed = sorted(by_pseudonym[p] for p in seen | group_seen)
        rows = sum(f["rows"] for f in files)
        group_rows = sum(f["rows"] for f in group_files)
        final = out.location
        result = {
            "export_id": export_id,
            "path": final,
            "region": region,
            "cutoff": cutoff.isoformat(),
            "rows": rows,
            "group_rows": group_rows,
            "subjects": len(disclosed),
            "files": len(files) + len(group_files),
        }
        write_manifest(
            root,
            {
                "format": FORMAT,
                "export_id": export_id,
                "region": region,
                "cutoff": cutoff.isoformat(),
                "created_at": datetime.now(UTC).isoformat(),
                "consent": "unwithdrawn research consent covering the cut-off; "
                "FI residents only in exports to region FI",
                "pseudonym": "HMAC-SHA256 of the subject under a random per-export "
                f"salt, first {PSEUDONYM_CHARS} hex chars; stable within this "
                "export only",
                "partitioning": "readings/type=<type>/date=<YYYY-MM-DD> (hive, UTC dates)",
                "schema": {
                    "readings": schema_doc(READINGS_SCHEMA),
                    "groups": schema_doc(GROUPS_SCHEMA),
                },
                "rows": {"readings": rows, "groups": group_rows},
                "subject_count": len(disclosed),
                "files": files + group_files,
                "purged_at": None,
            },
        )
        queries.record_export(
            conn,
            export_id=export_id,
            region=region,
            cutoff=cutoff,
            salt_enc=crypto.encrypt(master, salt),
            path=final,
            row_count=rows,
            actor=actor,
            subjects=disclosed,
        )
        audit(
            conn,
            actor,
            "export.disclose",
            None,
            export_id=export_id,
            region=region,
            cutoff=cutoff.isoformat(),
            subject_count=len(disclosed),
            row_count=rows,
            group_rows=group_rows,
            path=final,
        )
        out.publish()
    return result


# Prefect ----------------------------------------------------------------------


@task(
    name="write-export",
    retries=1,
    retry_delay_seconds=[30],
    retry_condition_fn=common.transient_failure,
    cache_policy=NO_CACHE,
)
def export_task(region: str, actor: str) -> dict[str, Any]:
    from core.settings import Settings

    settings = Settings()
    return run_export(
        settings.require_database_url(),
        settings.require_secret_key(),
        settings.export_dir,
        region,
        actor=actor,
    )


@flow(name="vitals-export", description="Pseudonymised Parquet export for analysts.")
def export_flow(region: str = "EU", actor: str = "prefect") -> dict[str, Any]:
    result = export_task(region, actor)
    get_run_logger().info(
        "export %s (%s): %s rows of %s subjects",
        result["export_id"],
        result["region"],
        result["rows"],
        result["subjects"],
    )
    return result
