"""Objections (role `dpo`): `POST /v1/subjects/{id}/objections` and `POST
/v1/objections/{id}/lift`. An objection beats every consent of its purpose
from the next flow run on. Thin: the work and its audit rows are in
`store.objections`, the same functions the CLI calls."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ingest.http.deps import AsDpo, RuntimeDep, Tx
from ingest.http.errors import ReasonedRoute, json_response
from ingest.http.models import ObjectionIn
from store import objections

router = APIRouter(prefix="/v1", tags=["objections"], route_class=ReasonedRoute)


@router.post(
    "/subjects/{subject_id}/objections",
    status_code=201,
    summary="Record an objection (beats every consent of its purpose from the next flow run)",
)
def add_objection(
    subject_id: str, body: ObjectionIn, rt: RuntimeDep, who: AsDpo, conn: Tx
) -> Response:
    result = objections.add_objection(
        conn, rt.master, subject_id, body.purpose, who.actor, partner_id=body.partner_id
    )
    return json_response(result, 201)


@router.post("/objections/{objection_id}/lift", summary="Lift an objection")
def lift_objection(objection_id: str, who: AsDpo, conn: Tx) -> Response:
    return json_response(objections.lift_objection(conn, objection_id, who.actor))
