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

COPY, not INSERT ... SELECT from the staging rows, stores the readings: it
costs the server about a third less per row (measured, docs/profile.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Literal, cast

import msgspec
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
_RETRIES = 3  # decide again after losing a race to store the same reading (or a deadlock)
# Binary COPY: the C dumpers of psycopg format a row faster than text. A uuid
# goes as its 16 raw bytes, which is its binary wire format (the bytea dumper
# is C, psycopg's uuid dumper Python).
STAGING_TYPES = ("int4", "bytea", "text", "text", "text", "timestamptz", "text")
# A `readings` row as the writer COPYs it (and the raw COPY ceiling of `make bench`).
READINGS_TYPES = (
    "timestamptz",
    "bytea",  # subject_id
    "bytea",  # provider_id
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


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """What became of one reading (a frozen Struct: one is made per reading)."""

    id: str | None
    status: Status
    reason: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "status": self.status, "reason": self.reason, "detail": self.detail}


def _storable(r: Reading) -> Refusal | None:
    """What COPY cannot carry (NUL bytes) or we will not index (absurd ids)."""
    rid, ref = r.id, r.user_ref
    if len(rid) <= MAX_ID_LENGTH >= len(ref) and "\x00" not in rid and "\x00" not in ref:
        return None
    ok = len(rid) <= MAX_ID_LENGTH and "\x00" not in rid
    return Refusal(
        rid if ok else None, INVALID_SCHEMA, f"ids are limited to {MAX_ID_LENGTH} characters"
    )


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
                    except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
                        # A concurrent batch stored the same reading first (or two
                        # batches storing each other's resends deadlocked): decide again.
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
        outcomes: list[Outcome] = []
        with self.pool.connection() as conn, conn.cursor() as cur:
            provider_ids: dict[str, bytes] = {}
            pids: list[bytes] = []
            with cur.copy(q("copy_staging_readings")) as copy:
                copy.set_types(STAGING_TYPES)
                write = copy.write_row
                for idx, (provider, parsed) in enumerate(items):
                    pid = provider_ids.get(provider)
                    if pid is None:
                        pid = provider_ids[provider] = _as_uuid(provider).bytes
                    pids.append(pid)
                    refusal = _storable(parsed) if type(parsed) is Reading else parsed
                    if refusal is None:
                        parsed = cast(Reading, parsed)
                        write(
                            (
                                idx,
                                pid,
                                parsed.id,
                                parsed.user_ref,
                                parsed.type,
                                parsed.effective_time,
                                None,
                            )
                        )
                        outcomes.append(Outcome(parsed.id, "accepted"))
                        continue
                    assert isinstance(refusal, Refusal)
                    outcomes.append(Outcome(refusal.id, "rejected", refusal.reason, refusal.detail))
                    rid = refusal.id
                    if rid is not None and (len(rid) > MAX_ID_LENGTH or "\x00" in rid):
                        rid = None
                    write((idx, pid, rid, None, None, None, refusal.reason))
            cur.execute(q("lock_batch_subjects"))
            decided = cur.execute(
                q("decide_batch"), {"transport": transport}, binary=True
            ).fetchall()
            # The same reading twice in one batch: the first one stored wins. Ids
            # are compared first; full keys only once an id comes again.
            first: dict[str, int] = {}
            again: set[tuple[bytes, str, datetime]] = set()
            with cur.copy(q("copy_readings")) as copy:
                copy.set_types(READINGS_TYPES)
                write = copy.write_row
                for idx, reason, subject, location_ok in decided:
                    r = cast(Reading, items[idx][1])
                    rid = r.id
                    if reason is None:
                        pid, t = pids[idx], r.effective_time
                        prev = first.setdefault(rid, idx)
                        if prev != idx:
                            again.add(
                                (pids[prev], rid, cast(Reading, items[prev][1]).effective_time)
                            )
                            if (pid, rid, t) in again:
                                reason = DUPLICATE
                            else:
                                again.add((pid, rid, t))
                    if reason is None:
                        rtype = r.type
                        lat, lon = (r.latitude, r.longitude) if location_ok else (None, None)
                        for c in r.components:
                            write(
                                (
                                    t,
                                    subject,
                                    pid,
                                    rid,
                                    rtype,
                                    c.name,
                                    c.value,
                                    c.unit,
                                    c.orig_value,
                                    c.orig_unit,
                                    lat,
                                    lon,
                                )
                            )
                        continue
                    outcomes[idx] = (
                        Outcome(rid, "duplicate")
                        if reason == DUPLICATE
                        else Outcome(rid, "rejected", reason, _DB_DETAIL.get(reason))
                    )
            conn.commit()
        return outcomes
