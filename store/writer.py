"""The one writer every transport uses: a batch in, per-reading outcomes out.

One transaction per batch, three statements:
1. COPY one row per reading (its components included) into a per-connection
   staging table;
2. lock the batch's subjects FOR SHARE (withdrawal and erasure take FOR UPDATE,
   so a withdrawal committed first always wins);
3. one statement (`store_batch`) decides every reading by joining links,
   subjects, providers and live consents, stores the components of the
   readings it lets in straight from the staging rows (coordinates only under
   a location consent), records refusals in `rejections` (never a value) and
   returns only the readings it did not store; then commit.
A resend is found in step 3; if a concurrent batch stores the same reading
meanwhile, the unique key refuses the insert and the batch is decided again
from the start (the resend is then a duplicate).

Python's share is one COPY row per reading: no per-reading result comes back
for a stored reading, and no second COPY is formatted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Literal

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
_COMPONENT_TYPES = ("text", "float8", "text", "float8", "text")
STAGING_TYPES = (
    ("int4", "bytea", "text", "text", "text", "timestamptz", "text")
    + _COMPONENT_TYPES * 2
    + ("float8", "float8")
)
_NO_COMPONENT: tuple[object, ...] = (None, None, None, None, None)
_REFUSED_TAIL = (None,) * 12  # a refused reading's components and coordinates
# The types of `readings` rows as the raw COPY ceiling of `make bench` writes them.
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
        """One attempt: stage, lock, decide and store, commit."""
        outcomes: list[Outcome] = []
        with self.pool.connection() as conn, conn.cursor() as cur:
            provider_ids: dict[str, bytes] = {}
            with cur.copy(q("copy_staging_readings")) as copy:
                copy.set_types(STAGING_TYPES)
                write = copy.write_row
                for idx, (provider, parsed) in enumerate(items):
                    pid = provider_ids.get(provider)
                    if pid is None:
                        pid = provider_ids[provider] = _as_uuid(provider).bytes
                    refusal = _storable(parsed) if type(parsed) is Reading else parsed
                    if refusal is None:
                        assert isinstance(parsed, Reading)
                        cs = parsed.components
                        c1 = cs[0]
                        if len(cs) == 1:
                            c2 = _NO_COMPONENT
                        elif len(cs) == 2:
                            c = cs[1]
                            c2 = (c.name, c.value, c.unit, c.orig_value, c.orig_unit)
                        else:
                            raise ValueError("a reading has one or two components")
                        write(
                            (
                                idx,
                                pid,
                                parsed.id,
                                parsed.user_ref,
                                parsed.type,
                                parsed.effective_time,
                                None,
                                c1.name,
                                c1.value,
                                c1.unit,
                                c1.orig_value,
                                c1.orig_unit,
                                *c2,
                                parsed.latitude,
                                parsed.longitude,
                            )
                        )
                        outcomes.append(Outcome(parsed.id, "accepted"))
                        continue
                    assert isinstance(refusal, Refusal)
                    outcomes.append(Outcome(refusal.id, "rejected", refusal.reason, refusal.detail))
                    rid = refusal.id
                    if rid is not None and (len(rid) > MAX_ID_LENGTH or "\x00" in rid):
                        rid = None
                    write((idx, pid, rid, None, None, None, refusal.reason, *_REFUSED_TAIL))
            cur.execute(q("lock_batch_subjects"))
            refused = cur.execute(q("store_batch"), {"transport": transport}).fetchall()
            for idx, reason in refused:
                rid = outcomes[idx].id
                outcomes[idx] = (
                    Outcome(rid, "duplicate")
                    if reason == DUPLICATE
                    else Outcome(rid, "rejected", reason, _DB_DETAIL.get(reason))
                )
            conn.commit()
        return outcomes
