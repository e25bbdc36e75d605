"""Partners and objections over the admin API: `POST/GET /v1/partners` and
the notices owed to a partner (role `admin`), `POST
/v1/subjects/{id}/objections` and `POST /v1/objections/{id}/lift` (role
`dpo`). Thin: the work and its audit rows are in `store.partners` and
`store.objections`, the same functions the CLI calls.

Bad input is a 4xx with a reason code, never a 5xx: refusals of the store
(`InputError`) map as everywhere in the admin API (400, 404, 409), and a
body that does not parse or validate is 422 `{"error": "invalid_body"}`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from ingest.api_admin import AsAdmin, AsDpo, transaction
from ingest.http import error, json_response, runtime
from store import objections, partners


class _Route(APIRoute):
    """Validation failures answer with a reason code like every other refusal."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as e:
                where = ", ".join(
                    ".".join(str(p) for p in err.get("loc", ())[1:]) or "body" for err in e.errors()
                )
                return error(422, "invalid_body", f"invalid or missing: {where}")

        return route


router = APIRouter(prefix="/v1", route_class=_Route)


class PartnerIn(BaseModel):
    name: str = Field(examples=["Acme Insights"])
    region: str = Field(examples=["EU"], description="EU or FI")
    purposes: list[str] = Field(examples=[["marketing", "disclosure"]])
    types: list[str] | None = Field(None, examples=[["heart-rate"]])


class ObjectionIn(BaseModel):
    purpose: str = Field(examples=["disclosure"], description="marketing, research or disclosure")
    partner_id: str | None = Field(None, description="disclosure to this partner only")


@router.post("/partners", status_code=201, tags=["partners"], summary="Register a partner")
def add_partner(body: PartnerIn, request: Request, who: AsAdmin) -> Response:
    with transaction(runtime(request)) as conn:
        result = partners.add_partner(
            conn, body.name, body.region, body.purposes, body.types, who.actor
        )
    return json_response(result, 201)


@router.get("/partners", tags=["partners"], summary="List partners")
def list_partners(request: Request, who: AsAdmin) -> Response:
    with transaction(runtime(request)) as conn:
        rows = partners.list_partners(conn, who.actor)
    return json_response(rows)


@router.get(
    "/partners/{partner_id}/notices",
    tags=["partners"],
    summary="Erasures and objections owed to the partner (GDPR Art. 19), by its pseudonyms",
)
def partner_notices(partner_id: str, request: Request, who: AsAdmin) -> Response:
    with transaction(runtime(request)) as conn:
        rows = partners.notices(conn, partner_id, who.actor)
    return json_response(rows)


@router.post(
    "/subjects/{subject_id}/objections",
    status_code=201,
    tags=["objections"],
    summary="Record an objection (beats every consent of its purpose from the next flow run)",
)
def add_objection(subject_id: str, body: ObjectionIn, request: Request, who: AsDpo) -> Response:
    rt = runtime(request)
    with transaction(rt) as conn:
        result = objections.add_objection(
            conn, rt.master, subject_id, body.purpose, who.actor, partner_id=body.partner_id
        )
    return json_response(result, 201)


@router.post("/objections/{objection_id}/lift", tags=["objections"], summary="Lift an objection")
def lift_objection(objection_id: str, request: Request, who: AsDpo) -> Response:
    with transaction(runtime(request)) as conn:
        result = objections.lift_objection(conn, objection_id, who.actor)
    return json_response(result)
