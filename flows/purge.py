"""`vitals export purge`: rewrite past exports without the rows of erased or
research-withdrawn subjects, and update their manifests.

Erasure queues the subject's pseudonym per export (export_purge_queue); a
research withdrawal is found from the disclosure log. Each affected Parquet
file is filtered with pyarrow (one file in memory at a time: files are
bounded by the export's rows_per_file), written to a temp file (0600) and renamed
over the old one; the manifest is rewritten atomically after its files.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flows.export import MANIFEST, file_entry, private_file, pseudonym, write_manifest
from ingest import admin, crypto
from ingest.db import q, translate_errors


def _filter_file(path: Path, doomed: pa.Array) -> int | None:
    """Drop doomed pseudonyms from one file. Returns rows left, or None if untouched."""
    table = pq.read_table(path)
    keep = pc.invert(pc.is_in(table["pseudonym"], value_set=doomed))
    kept = table.filter(keep)
    if kept.num_rows == table.num_rows:
        return None
    if kept.num_rows == 0:
        path.unlink()
        return 0
    tmp = private_file(path.with_name(f".{path.name}.purge"))
    pq.write_table(kept.cast(table.schema), tmp, compression="zstd")
    os.replace(tmp, path)
    return kept.num_rows


def purge_export(root: Path, doomed: set[str]) -> dict[str, int]:
    """Rewrite one export directory without the doomed pseudonyms."""
    manifest = orjson.loads((root / MANIFEST).read_bytes())
    values = pa.array(sorted(doomed), pa.string())
    files, removed, rewritten = [], 0, 0
    for entry in manifest["files"]:
        path = root / entry["path"]
        left = _filter_file(path, values) if path.exists() else 0
        if left is None:
            files.append(entry)
            continue
        rewritten += 1
        removed += entry["rows"] - left
        if left:
            files.append(file_entry(root, path, left, entry["kind"]))
    if rewritten:
        manifest["files"] = files
        rows = manifest.setdefault("rows", {})
        for kind in {f["kind"] for f in manifest["files"]} | set(rows):
            rows[kind] = sum(f["rows"] for f in files if f["kind"] == kind)
        manifest["purged_at"] = datetime.now(UTC).isoformat()
        write_manifest(root, manifest)
    return {
        "files_rewritten": rewritten,
        "rows_removed": removed,
        "readings_rows": sum(f["rows"] for f in files if f["kind"] == "readings"),
    }


def purge_exports(database_url: str, master: bytes, *, actor: str) -> dict[str, Any]:
    """Purge every export that holds rows of erased or research-withdrawn subjects."""
    report: list[dict[str, Any]] = []
    with translate_errors(), psycopg.connect(database_url) as conn:
        for export_id, path, salt_enc in conn.execute(q("purge_exports")).fetchall():
            params = {"export_id": export_id}
            doomed = {r[0] for r in conn.execute(q("purge_queued"), params).fetchall()}
            withdrawn = [
                r[0] for r in conn.execute(q("purge_research_withdrawn"), params).fetchall()
            ]
            if withdrawn:
                salt = crypto.decrypt(master, salt_enc)
                doomed |= {pseudonym(salt, sid) for sid in withdrawn}
            root = Path(path)
            if not doomed or not (root / MANIFEST).exists():
                conn.commit()
                continue
            result = purge_export(root, doomed)
            conn.execute(q("purge_done"), params | {"row_count": result["readings_rows"]})
            admin.audit(
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
    return {"exports_purged": report}
