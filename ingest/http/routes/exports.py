"""Export manifests (role `analyst`): the export log and each export's `_manifest.json`."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Response

from ingest.http.deps import AsAnalyst, Tx
from ingest.http.errors import json_response
from store import reads

router = APIRouter(prefix="/v1", tags=["exports"])


@router.get("/exports", summary="List exports")
def list_exports(who: AsAnalyst, conn: Tx) -> Response:
    return json_response(reads.exports(conn, who.actor))


@router.get("/exports/{export_id}", summary="An export and its _manifest.json")
def get_export(export_id: str, who: AsAnalyst, conn: Tx) -> Response:
    row = reads.export(conn, export_id, who.actor)
    manifest_path = Path(row.pop("path")) / "_manifest.json"
    try:
        row["manifest"] = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        row["manifest"] = None
    return json_response(row)
