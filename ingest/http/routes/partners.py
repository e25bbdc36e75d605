"""Partners (role `admin`): `POST/GET /v1/partners` and the notices owed to a
partner (GDPR Art. 19). Thin: the work and its audit rows are in
`store.partners`, the same functions the CLI calls."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ingest.http.deps import AsAdmin, Tx
from ingest.http.errors import ReasonedRoute, json_response
from ingest.http.models import PartnerIn
from store import partners

router = APIRouter(prefix="/v1", tags=["partners"], route_class=ReasonedRoute)


@router.post("/partners", status_code=201, summary="Register a partner")
def add_partner(body: PartnerIn, who: AsAdmin, conn: Tx) -> Response:
    result = partners.add_partner(
        conn, body.name, body.region, body.purposes, body.types, who.actor
    )
    return json_response(result, 201)


@router.get("/partners", summary="List partners")
def list_partners(who: AsAdmin, conn: Tx) -> Response:
    return json_response(partners.list_partners(conn, who.actor))


@router.get(
    "/partners/{partner_id}/notices",
    summary="Erasures and objections owed to the partner (GDPR Art. 19), by its pseudonyms",
)
def partner_notices(partner_id: str, who: AsAdmin, conn: Tx) -> Response:
    return json_response(partners.notices(conn, partner_id, who.actor))
