"""The webhook: `POST /v1/providers/{provider_id}/readings`, signed with
`Vitals-Signature` or with the Standard Webhooks headers (`webhook-id`,
`webhook-timestamp`, `webhook-signature`). The one place where the HTTP transport uses the gate
(`Runtime.gate`, which `bootstrap` builds over the shared coalescing writer):
the payload is parsed there and its readings written through it, whose
transaction decides consent; a 200 means every accepted reading is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool

from core.errors import StorageError, StorageUnavailable
from ingest.gate import Format, MalformedJSON, ShapeError, TooManyItems
from ingest.http.deps import Runtime, RuntimeDep
from ingest.http.errors import error, unavailable
from ingest.http.models import (
    MAX_BODY_BYTES,
    MAX_ITEMS,
    WEBHOOK_OPENAPI,
    WEBHOOK_RESPONSES,
    WebhookResult,
)
from ingest.http.signatures import (
    SIGNATURE_HEADER,
    SIGNATURE_MISMATCH,
    WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
    parse_auth,
)

log = logging.getLogger("vitals.http")

TRANSPORT = "http"
INLINE_PARSE_BYTES = 4096  # smaller bodies are parsed on the event loop (no thread hop)

router = APIRouter()


@router.post(
    "/v1/providers/{provider_id}/readings",
    tags=["webhook"],
    summary="Push readings (signed)",
    response_model=WebhookResult,
    responses=WEBHOOK_RESPONSES,
    openapi_extra=WEBHOOK_OPENAPI,
)
async def post_readings(
    provider_id: str,
    request: Request,
    rt: RuntimeDep,
    vitals_signature: Annotated[
        str | None,
        Header(
            alias=SIGNATURE_HEADER,
            description="t=UNIX_SECONDS,v1=HEX; HEX = HMAC-SHA256(secret, f'{t}.{raw_body}')",
        ),
    ] = None,
    webhook_id: Annotated[
        str | None,
        Header(alias=WEBHOOK_ID_HEADER, description="Standard Webhooks: the message id"),
    ] = None,
    webhook_timestamp: Annotated[
        str | None,
        Header(alias=WEBHOOK_TIMESTAMP_HEADER, description="Standard Webhooks: UNIX_SECONDS"),
    ] = None,
    webhook_signature: Annotated[
        str | None,
        Header(
            alias=WEBHOOK_SIGNATURE_HEADER,
            description="Standard Webhooks: space-separated v1,BASE64 where BASE64 = "
            "base64(HMAC-SHA256(key, f'{webhook_id}.{webhook_timestamp}.{raw_body}'))",
        ),
    ] = None,
) -> Response:
    signature = (vitals_signature, webhook_id, webhook_timestamp, webhook_signature)
    return await _webhook(rt, provider_id, request, signature)


async def _webhook(
    rt: Runtime,
    provider_id: str,
    request: Request,
    signature: tuple[str | None, str | None, str | None, str | None],
) -> Response:
    """Authenticate, read within limits, hand the raw body to the gate (one-pass
    decode and parse, then write through the shared coalescing writer), answer."""
    assert rt.providers is not None and rt.gate is not None
    provider = rt.providers.cached(provider_id)
    if provider is None:
        try:
            provider = await run_in_threadpool(rt.providers.get, provider_id)
        except StorageUnavailable:
            return unavailable()
    if provider is None or not provider.active:
        return error(404, "unknown_provider", "no active provider with this id")
    # A missing, garbled or stale header is refused before a byte of the body is
    # read; the HMAC is computed while the body streams in, and checked before
    # the body is parsed.
    header = parse_auth(*signature, time.time())
    if isinstance(header, str):
        return error(401, "bad_signature", header)
    mac = header.start(provider.secret)
    body = await read_limited(request, MAX_BODY_BYTES, mac.update)
    if body is None:
        return error(413, "too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
    if not header.matches(mac):
        return error(401, "bad_signature", SIGNATURE_MISMATCH)
    fmt = media_format(request.headers.get("content-type"))
    if fmt is False:
        return error(
            415, "unsupported_media_type", "send application/json or application/fhir+json"
        )
    try:
        if len(body) <= INLINE_PARSE_BYTES:
            parsed = rt.gate.parse(body, fmt)
        else:  # keep the event loop free while a large batch is decoded and validated
            parsed = await run_in_threadpool(rt.gate.parse, body, fmt)
    except MalformedJSON:
        return error(400, "malformed_json", "the body is not valid UTF-8 JSON")
    except TooManyItems:
        return error(413, "too_many_items", f"at most {MAX_ITEMS} data points per request")
    except ShapeError as e:
        return error(400, "wrong_shape", str(e))
    try:
        future = rt.gate.submit([(provider.provider_id, p) for p in parsed])
        outcomes = await asyncio.wrap_future(future)
    except StorageUnavailable:
        return unavailable()
    except StorageError:
        log.exception("storage error", extra={"event": "storage_error"})
        return error(500, "storage_error", "the readings could not be stored")
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for o in outcomes:
        counts[o.status] += 1
    log.info(
        "readings",
        extra={
            "event": "readings",
            "provider_id": provider.provider_id,
            "items": len(outcomes),
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
        },
    )
    # msgspec encodes the Outcome Structs as they are (the shape of Outcome.as_dict).
    answer = msgspec.json.encode(
        {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "results": outcomes,
        }
    )
    return Response(answer, media_type="application/json")


# Body handling -------------------------------------------------------------------


async def read_limited(
    request: Request, limit: int, on_chunk: Callable[[bytes], object] | None = None
) -> bytes | None:
    """The raw body, or None as soon as it exceeds `limit` bytes (rest unread).

    `on_chunk` sees every chunk as it arrives (the signature's HMAC is fed here).
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        if on_chunk is not None:
            on_chunk(chunk)
        chunks.append(chunk)
    return b"".join(chunks)


def media_format(content_type: str | None) -> Format | None | Literal[False]:
    """The payload format a Content-Type names: "fhir" for application/fhir+json,
    None (recognised from the payload: a FHIR resource has a `resourceType`)
    for application/json or none, False for any other media type."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/fhir+json":
        return "fhir"
    if media in ("", "application/json"):
        return None
    return False
