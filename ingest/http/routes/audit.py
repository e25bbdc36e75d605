"""The audit log (role `dpo`): newest first, filtered, paged; reading it is audited too."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from ingest.http.deps import AsDpo, RuntimeDep, Tx
from ingest.http.errors import json_response
from store import reads

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit", summary="Read the audit log, newest first")
def read_audit(
    rt: RuntimeDep,
    who: AsDpo,
    conn: Tx,
    actor: str | None = None,
    action: str | None = None,
    subject: Annotated[str | None, Query(description="subject id (or its erasure hash)")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: Annotated[int | None, Query(ge=0, le=2**62, description="audit_id cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    rows = reads.audit_log(
        conn,
        rt.master,
        who.actor,
        by_actor=actor,
        action=action,
        subject=subject,
        since=since,
        until=until,
        before=before,
        limit=limit,
    )
    return json_response(rows)
