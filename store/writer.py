"""The one writer every transport uses: a batch in, per-reading outcomes out.

One transaction per batch:
1. COPY one row per reading (no values) into a per-connection staging table;
2. lock the batch's subjects FOR SHARE (withdrawal and erasure take FOR UPDATE,
   so a withdrawal committed first always wins);
3. one statement decides every reading by joining links, subjects, providers
   and live consents, records refusals in `rejections` (never a value) and
   returns the decision;
4. COPY the components of the readings it let in straight into `readings`
   (coordinates only under a location consent), then commit.
A resend is found in step 3; if a concurrent batch stores the same reading
between steps 3 and 4, the unique key refuses the COPY and the batch is
decided again from the start (the resend is then a duplicate).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import psycopg
import psycopg_pool

from core import metrics
from core.errors import StorageError, StorageUnavailable
from schemas.reading import (
    INVALID_SCHEMA,
    NO_CONSENT,
    TYPE_NOT_APPROVED,
    UNKNOWN_SUBJECT,
    Reading,
    Refusal,
)
from store.db import q, translate_errors

Status = Literal["accepted", "duplicate", "rejected"]
Parsed = Reading | Refusal

# What the database decided, explained without values or personal data.
_DB_DETAIL = {
    UNKNOWN_SUBJECT: "no subject is linked to header.user_id for this provider",
    TYPE_NOT_APPROVED: "this provider is not approved for this data type",
    NO_CONSENT: "no consent covers this provider, data type and effective time",
}
MAX_ID_LENGTH = 256
DUPLICATE = "duplicate"
_RETRIES = 3  # decide again after losing a race to store the same reading
# Binary COPY: the C dumpers of psycopg format a row faster than text.
STAGING_TYPES = ("int4", "uuid", "text", "text", "text", "timestamptz", "text", "text")
READINGS_TYPES = (
    "timestamptz",
    "uuid",
    "uuid",
    "text",
    "text",
    "text",
    "float8",
    "text",
    "float8",
    "text",
    "float8",
    "float8",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    id: str | None
    status: Status
    reason: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "status": self.status, "reason": self.reason, "detail": self.detail}


def _storable(r: Reading) -> Refusal | None:
    """What COPY cannot carry (NUL bytes) or we will not index (absurd ids)."""
    for field in (r.id, r.user_ref):
        if len(field) > MAX_ID_LENGTH or "\x00" in field:
            rid = r.id if len(r.id) <= MAX_ID_LENGTH and "\x00" not in r.id else None
            return Refusal(rid, INVALID_SCHEMA, f"ids are limited to {MAX_ID_LENGTH} characters")
    return None


def _as_uuid(provider_id: str) -> uuid.UUID:
    """Transports pass registered provider ids; anything else matches no provider
    (its readings are then refused as unknown_subject)."""
    try:
        return uuid.UUID(provider_id)
    except ValueError:
        return uuid.UUID(int=0)


class Writer:
    """Commits batches of parsed readings. Thread-safe (one pool connection per call)."""

    def __init__(self, pool: psycopg_pool.ConnectionPool) -> None:
        self.pool = pool

    def write(self, items: Sequence[tuple[str, Parsed]], transport: str) -> list[Outcome]:
        """Store a batch of (provider_id, parsed) in one transaction.

        Returns outcomes in input order. Raises StorageUnavailable /
        StorageError; then nothing of the batch was stored.
        """
        if not items:
            return []
        started = time.perf_counter()
        try:
            with translate_errors():
                for attempt in range(_RETRIES):
                    try:
                        result = self._commit(items, transport)
                        break
                    except psycopg.errors.UniqueViolation:
                        if attempt == _RETRIES - 1:
                            raise
        except StorageError as e:
            kind = "unavailable" if isinstance(e, StorageUnavailable) else "error"
            metrics.STORAGE_ERRORS.labels(transport, kind).inc()
            raise
        elapsed = time.perf_counter() - started
        metrics.record_batch(transport, elapsed, ((o.status, o.reason) for o in result))
        return result

    def _commit(self, items: Sequence[tuple[str, Parsed]], transport: str) -> list[Outcome]:
        """One attempt: stage, lock, decide, store, commit."""
        outcomes: list[Outcome | None] = [None] * len(items)
        with self.pool.connection() as conn, conn.cursor() as cur:
            uuids: dict[str, uuid.UUID] = {}
            with cur.copy(q("copy_staging_readings")) as copy:
                copy.set_types(STAGING_TYPES)
                for idx, (provider, parsed) in enumerate(items):
                    provider_id = uuids.get(provider) or uuids.setdefault(
                        provider, _as_uuid(provider)
                    )
                    if isinstance(parsed, Reading):
                        refusal = _storable(parsed)
                        if refusal is None:
                            copy.write_row(
                                (
                                    idx,
                                    provider_id,
                                    parsed.id,
                                    parsed.user_ref,
                                    parsed.type,
                                    parsed.effective_time,
                                    None,
                                    transport,
                                )
                            )
                            continue
                        parsed = refusal
                    outcomes[idx] = Outcome(parsed.id, "rejected", parsed.reason, parsed.detail)
                    rid = parsed.id
                    if rid is not None and (len(rid) > MAX_ID_LENGTH or "\x00" in rid):
                        rid = None
                    copy.write_row(
                        (idx, provider_id, rid, None, None, None, parsed.reason, transport)
                    )
            cur.execute(q("lock_batch_subjects"))
            decided = cur.execute(q("decide_batch")).fetchall()
            stored: set[tuple[uuid.UUID, str, object]] = set()
            with cur.copy(q("copy_readings")) as copy:
                copy.set_types(READINGS_TYPES)
                for idx, reason, subject_id, location_ok in decided:
                    if outcomes[idx] is not None:
                        continue
                    provider, r = items[idx]
                    provider_id = uuids[provider]
                    assert isinstance(r, Reading)
                    if reason is None:
                        key = (provider_id, r.id, r.effective_time)
                        if key in stored:  # the same reading twice in one batch
                            reason = DUPLICATE
                        else:
                            stored.add(key)
                            lat, lon = (r.latitude, r.longitude) if location_ok else (None, None)
                            for c in r.components:
                                copy.write_row(
                                    (
                                        r.effective_time,
                                        subject_id,
                                        provider_id,
                                        r.id,
                                        r.type,
                                        c.name,
                                        c.value,
                                        c.unit,
                                        c.orig_value,
                                        c.orig_unit,
                                        lat,
                                        lon,
                                    )
                                )
                            outcomes[idx] = Outcome(r.id, "accepted")
                            continue
                    if reason == DUPLICATE:
                        outcomes[idx] = Outcome(r.id, "duplicate")
                    else:
                        outcomes[idx] = Outcome(r.id, "rejected", reason, _DB_DETAIL.get(reason))
            conn.commit()
        assert all(o is not None for o in outcomes), "every reading gets an outcome"
        return outcomes  # type: ignore[return-value]
