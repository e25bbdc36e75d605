"""Data-subject rights (role `dpo`): access extract, correction, erasure and the
purge of past exports. The work is done by `rights`, the same functions the
CLI calls; every call is audited there."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from core.errors import InputError
from core.outputs import visible
from ingest.http.deps import AsDpo, RuntimeDep, Tx
from ingest.http.errors import json_response
from ingest.http.models import ReadingCorrection, SubjectCorrection
from rights import correction, erasure, extract, fhir, purge

router = APIRouter(prefix="/v1", tags=["subject rights"])
_SPOOL_BYTES = 8 << 20  # extracts larger than this go through a temp file
_FORMATS = {
    "json": (extract.write_extract, "application/json", "json"),
    "fhir": (fhir.write_fhir_extract, "application/fhir+json", "fhir.json"),
}


@router.get(
    "/subjects/{subject_id}/export",
    summary="Access extract: everything held about the subject, as one JSON document",
    description="`format=json` (default): the vitals extract. `format=fhir`: a FHIR R4 "
    "`Bundle` of type `collection` (`application/fhir+json`): a `Patient` with only the "
    "subject id, an `Observation` per reading, a `Consent` per consent and per objection. "
    'Another format answers 400 `{"error": "invalid_format"}`.',
)
def export_subject(
    subject_id: str,
    who: AsDpo,
    conn: Tx,
    format: Annotated[str, Query(description="json (default) or fhir")] = "json",  # noqa: A002
) -> Response:
    if format not in _FORMATS:
        raise InputError("invalid_format", f"format must be one of {', '.join(_FORMATS)}")
    write, media_type, suffix = _FORMATS[format]
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
    try:
        write(conn, subject_id, spool, actor=who.actor)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        with spool:
            yield from iter(lambda: spool.read(1 << 16), b"")

    return StreamingResponse(
        chunks(),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="subject-{subject_id}.{suffix}"'},
    )


@router.patch("/subjects/{subject_id}", summary="Correct residency, relationship end, links")
def correct_subject(subject_id: str, body: SubjectCorrection, who: AsDpo, conn: Tx) -> Response:
    result = correction.correct_subject(
        conn,
        subject_id,
        who.actor,
        residency=body.residency,
        relationship_end=body.relationship_end,
        clear_relationship_end=body.clear_relationship_end,
        add_links=[(link.provider_id, link.user_ref) for link in body.add_links],
        remove_links=[(link.provider_id, link.user_ref) for link in body.remove_links],
    )
    return json_response(result)


@router.post(
    "/subjects/{subject_id}/readings/correct",
    summary="Mark a reading erroneous (kept, left out of groups and exports), valid, or delete it",
)
def correct_reading(subject_id: str, body: ReadingCorrection, who: AsDpo, conn: Tx) -> Response:
    result = correction.correct_reading(
        conn, subject_id, body.provider_id, body.reading_id, who.actor, action=body.action
    )
    return json_response(result)


@router.delete(
    "/subjects/{subject_id}",
    summary="Erase the subject everywhere (idempotent, resumable); returns the receipt",
)
def erase_subject(subject_id: str, rt: RuntimeDep, who: AsDpo) -> Response:
    url = rt.settings.require_database_url()
    return json_response(erasure.erase_subject(url, rt.master, subject_id, who.actor))


@router.post(
    "/exports/purge",
    tags=["exports"],
    summary="Rewrite past exports without erased, research-withdrawn or re-resident subjects",
    description="Where this server sees the export root it runs the purge: 200 with "
    '`status: "done"` when every queued export was rewritten, 500 with `status: "failed"` '
    "and the errors when an export's files are missing (its entries stay queued). Where it "
    'does not, it fills the purge queue and answers 202 `status: "queued"`: the flows '
    "runner's scheduled purge (`vitals flows serve`) does the rewrite.",
)
def purge_exports(rt: RuntimeDep, who: AsDpo) -> Response:
    url = rt.settings.require_database_url()
    if not visible(rt.settings.export_dir):
        queued = purge.pending(url, rt.master)
        if queued["entries"]:
            return json_response(
                {
                    "status": "queued",
                    "export_root": "not visible to this server",
                    "exports_purged": [],
                    "failed": [],
                    "pending": queued,
                },
                status=202,
            )
    result = purge.purge_exports(url, rt.master, actor=who.actor)
    return json_response(result, status=500 if result["failed"] else 200)
