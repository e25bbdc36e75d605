"""`vitals export purge`: rewrite past exports without the rows of erased,
research-withdrawn or re-resident subjects, and update their manifests.

The work list is the purge queue (`export_purge_queue`, sql/migrations/0005):
erasure queues the subject's pseudonym per export, a research withdrawal and a
residency correction queue the subject per export. Each run first finds what
those missed (`queue_pending`): disclosure-log rows of subjects that no longer
exist (an export that raced an erasure) become pseudonym entries and the raw
subject id leaves the log; subjects still in an export without research consent
now, or FI residents in an EU export, are queued.

Then every export with queued entries is rewritten: each affected Parquet file
is filtered with pyarrow (one file in memory at a time: files are bounded by
the export's rows_per_file) and replaced whole (locally a temp file, 0600,
renamed over the old one; on S3 a PUT of the object: `OutputRoot.replacing`);
the manifest is rewritten after its files; files left empty are removed after
the manifest. An export recorded at an `s3://` URL is purged there. An
export whose manifest or listed files are missing is not skipped: the run
reports it as failed (the CLI exits 1, the flow run fails, the API answers
500), the error is recorded on its queue entries, and they stay queued.
Entries leave the queue only when their export has been rewritten; an
erasure receipt becomes `complete` when none of its entries is left.

The CLI (`vitals export purge`), the admin API (`POST /v1/exports/purge`) and
the scheduled `vitals-purge` flow (`flows.purge`) call `purge_exports`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import crypto
from core.outputs import MANIFEST, OutputRoot, file_entry, pseudonym, write_manifest
from rights.erasure import subject_hash
from store import registry
from store import rights as queries
from store.db import Connection, connect, translate_errors


class PurgeError(RuntimeError):
    """An export cannot be purged as it is (files missing): nothing was skipped silently."""


def _filter_file(root: OutputRoot, rel: str, doomed: pa.Array) -> int | None:
    """Drop doomed pseudonyms from one file. Returns rows left, or None if untouched.

    A file left empty is kept as it is here: the caller removes it after the
    manifest no longer lists it."""
    table = pq.read_table(root.path(rel), filesystem=root.fs)
    keep = pc.invert(pc.is_in(table["pseudonym"], value_set=doomed))
    kept = table.filter(keep)
    if kept.num_rows == table.num_rows:
        return None
    if kept.num_rows == 0:
        return 0
    with root.replacing(rel) as where:
        pq.write_table(kept.cast(table.schema), where, compression="zstd", filesystem=root.fs)
    return kept.num_rows


def _unlisted(root: OutputRoot, listed: set[str]) -> list[str]:
    """Parquet files (and rewrite temp files) the manifest does not list: left by
    an interrupted purge, with rows that were meant to go."""
    found = []
    for rel in root.files():
        name = rel.rsplit("/", 1)[-1]
        if name.endswith((".tmp", ".purge")) or (name.endswith(".parquet") and rel not in listed):
            found.append(rel)
    return found


def purge_export(root: OutputRoot | Path | str, doomed: set[str]) -> dict[str, int]:
    """Rewrite one export (a directory or an s3:// prefix) without the doomed pseudonyms.

    Raises PurgeError, before changing anything, when the manifest or a file it
    lists is missing."""
    root = OutputRoot.at(root)
    if not root.is_file(MANIFEST):
        raise PurgeError(f"export directory {root} has no {MANIFEST} (missing or not mounted here)")
    manifest = orjson.loads(root.read_bytes(MANIFEST))
    missing = [e["path"] for e in manifest["files"] if not root.is_file(e["path"])]
    if missing:
        raise PurgeError(f"export {root}: files listed in {MANIFEST} are missing: {missing}")
    listed = {e["path"] for e in manifest["files"]}
    for leftover in _unlisted(root, listed):
        root.delete(leftover)
    values = pa.array(sorted(doomed), pa.string())
    files, emptied, removed, rewritten = [], [], 0, 0
    for entry in manifest["files"]:
        left = _filter_file(root, entry["path"], values)
        if left is None:
            files.append(entry)
            continue
        rewritten += 1
        removed += entry["rows"] - left
        if left:
            files.append(file_entry(root, entry["path"], left, entry["kind"]))
        else:
            emptied.append(entry["path"])
    if rewritten:
        manifest["files"] = files
        rows = manifest.setdefault("rows", {})
        for kind in {f["kind"] for f in manifest["files"]} | set(rows):
            rows[kind] = sum(f["rows"] for f in files if f["kind"] == kind)
        manifest["purged_at"] = datetime.now(UTC).isoformat()
        write_manifest(root, manifest)
    for rel in emptied:
        root.delete(rel)
    return {
        "files_rewritten": rewritten,
        "rows_removed": removed,
        "readings_rows": sum(f["rows"] for f in files if f["kind"] == "readings"),
    }


def queue_pending(conn: Connection, master: bytes) -> dict[str, int]:
    """Queue what erasure, withdrawal and correction could not (see the module
    docstring) and count the queue. Commits."""
    for export_id, sid, salt_enc in queries.purge_orphans(conn):
        queries.purge_queue_pseudonym(
            conn,
            export_id,
            pseudonym(crypto.decrypt(master, salt_enc), sid),
            subject_hash(master, sid),
        )
        queries.purge_forget_orphan(conn, export_id, sid)
    queries.purge_detect(conn)
    entries, exports = queries.purge_pending_count(conn)
    conn.commit()
    return {"entries": entries, "exports": exports}


def pending(database_url: str, master: bytes) -> dict[str, int]:
    """Fill the queue from the database alone (no export files needed) and count it."""
    with translate_errors(), connect(database_url) as conn:
        return queue_pending(conn, master)


def purge_exports(database_url: str, master: bytes, *, actor: str) -> dict[str, Any]:
    """Purge every export with queued entries; one export per transaction.

    Returns `{"status": "done"|"failed", "exports_purged": [...], "failed":
    [{"export_id", "path", "error"}], "pending": {"entries", "exports"}}`;
    "failed" exports keep their queue entries (with the error) for the next run.
    """
    report: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    with translate_errors(), connect(database_url) as conn:
        queries.purge_lock(conn)  # one purge at a time; released on close
        conn.commit()
        queue_pending(conn, master)
        for export_id, path, salt_enc in queries.purge_exports_queued(conn):
            entries = queries.purge_queued(conn, export_id)
            queue_ids = [e[0] for e in entries]
            subject_ids = [e[2] for e in entries if e[2] is not None]
            doomed = {e[1] for e in entries if e[1] is not None}
            if subject_ids:
                salt = crypto.decrypt(master, salt_enc)
                doomed |= {pseudonym(salt, sid) for sid in subject_ids}
            try:
                result = purge_export(OutputRoot.at(path), doomed)
            except (PurgeError, OSError) as e:
                error = str(e)
                queries.purge_failed(conn, queue_ids, error)
                registry.audit(
                    conn, actor, "export.purge_failed", None, export_id=export_id, error=error
                )
                conn.commit()
                failed.append({"export_id": export_id, "path": path, "error": error})
                continue
            queries.purge_done(conn, export_id, queue_ids, subject_ids, result["readings_rows"])
            queries.purge_complete_receipts(conn)
            registry.audit(
                conn,
                actor,
                "export.purge",
                None,
                export_id=export_id,
                subjects=len(doomed),
                rows_removed=result["rows_removed"],
                files_rewritten=result["files_rewritten"],
            )
            conn.commit()
            report.append(
                {
                    "export_id": export_id,
                    "subjects": len(doomed),
                    "rows_removed": result["rows_removed"],
                    "files_rewritten": result["files_rewritten"],
                }
            )
        queries.purge_complete_receipts(conn)
        pending_entries, pending_exports = queries.purge_pending_count(conn)
        conn.commit()
    return {
        "status": "failed" if failed else "done",
        "exports_purged": report,
        "failed": failed,
        "pending": {"entries": pending_entries, "exports": pending_exports},
    }


def raise_if_failed(result: dict[str, Any]) -> dict[str, Any]:
    if result["failed"]:
        detail = "; ".join(f"{f['export_id']}: {f['error']}" for f in result["failed"])
        raise PurgeError(f"{len(result['failed'])} export(s) could not be purged: {detail}")
    return result
