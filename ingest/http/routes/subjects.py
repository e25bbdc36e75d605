"""Subjects, their links and consents (role `dpo`): consents are append-only,
a withdrawal is effective for every reading committed after it returns. Every
call is audited (writes by `store.registry`, reads by `store.reads`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ingest.http.deps import AsDpo, Tx
from ingest.http.errors import json_response
from ingest.http.models import ConsentIn, LinkIn, SubjectIn
from store import reads, registry

router = APIRouter(prefix="/v1")


@router.post("/subjects", status_code=201, tags=["subjects"], summary="Add a subject")
def add_subject(body: SubjectIn, who: AsDpo, conn: Tx) -> Response:
    links = [(link.provider_id, link.user_ref) for link in body.links]
    return json_response(registry.add_subject(conn, body.residency, links, who.actor), 201)


@router.get("/subjects/{subject_id}", tags=["subjects"], summary="A subject and its links")
def get_subject(subject_id: str, who: AsDpo, conn: Tx) -> Response:
    return json_response(reads.subject(conn, subject_id, who.actor))


@router.post(
    "/subjects/{subject_id}/links",
    status_code=201,
    tags=["subjects"],
    summary="Link a provider's user ref to the subject",
)
def add_link(subject_id: str, body: LinkIn, who: AsDpo, conn: Tx) -> Response:
    registry.add_link(conn, subject_id, body.provider_id, body.user_ref, who.actor)
    return json_response(
        {"subject_id": subject_id, "provider_id": body.provider_id, "user_ref": body.user_ref},
        201,
    )


@router.get(
    "/subjects/{subject_id}/consents",
    tags=["consents"],
    summary="The subject's consent history (append-only: grants and withdrawals)",
)
def consent_history(subject_id: str, who: AsDpo, conn: Tx) -> Response:
    return json_response(reads.consent_history(conn, subject_id, who.actor))


@router.post(
    "/subjects/{subject_id}/consents",
    status_code=201,
    tags=["consents"],
    summary="Record a consent",
)
def grant_consent(subject_id: str, body: ConsentIn, who: AsDpo, conn: Tx) -> Response:
    result = registry.grant_consent(
        conn,
        subject_id,
        body.purpose,
        who.actor,
        provider_id=body.provider_id,
        types=body.types,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
    )
    return json_response(result, 201)


@router.post(
    "/consents/{consent_id}/withdraw",
    tags=["consents"],
    summary="Withdraw a consent (effective for every reading committed after this returns)",
)
def withdraw_consent(consent_id: str, who: AsDpo, conn: Tx) -> Response:
    return json_response(registry.withdraw_consent(conn, consent_id, who.actor))
