"""The one writer every transport uses: a batch in, per-reading outcomes out.

One transaction per batch: COPY into per-connection staging tables, lock the
batch's subjects against concurrent withdrawal/erasure, then one
INSERT ... SELECT that applies the consent join with ON CONFLICT DO NOTHING.
Refused readings are recorded in `rejections` without any value.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import psycopg_pool

from ingest import metrics
from ingest.db import StorageError, StorageUnavailable, q, translate_errors
from schemas.reading import (
    INVALID_SCHEMA,
    NO_CONSENT,
    TYPE_NOT_APPROVED,
    UNKNOWN_SUBJECT,
    Reading,
    Refusal,
)

Status = Literal["accepted", "duplicate", "rejected"]
Parsed = Reading | Refusal

# What the database decided, explained without values or personal data.
_DB_DETAIL = {
    UNKNOWN_SUBJECT: "no subject is linked to header.user_id for this provider",
    TYPE_NOT_APPROVED: "this provider is not approved for this data type",
    NO_CONSENT: "no consent covers this provider, data type and effective time",
}
MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Outcome:
    id: str | None
    status: Status
    reason: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "status": self.status, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class BatchStats:
    readings: int
    seconds: float


def _storable(r: Reading) -> Refusal | None:
    """What COPY cannot carry (NUL bytes) or we will not index (absurd ids)."""
    for field in (r.id, r.user_ref):
        if len(field) > MAX_ID_LENGTH or "\x00" in field:
            rid = r.id if len(r.id) <= MAX_ID_LENGTH and "\x00" not in r.id else None
            return Refusal(rid, INVALID_SCHEMA, f"ids are limited to {MAX_ID_LENGTH} characters")
    return None


class Writer:
    """Commits batches of parsed readings. Thread-safe (one pool connection per call)."""

    def __init__(self, pool: psycopg_pool.ConnectionPool) -> None:
        self.pool = pool
        self.last: BatchStats | None = None

    def write(self, items: Sequence[tuple[str, Parsed]], transport: str) -> list[Outcome]:
        """Store a batch of (provider_id, parsed) in one transaction.

        Returns outcomes in input order. Raises StorageUnavailable /
        StorageError; then nothing of the batch was stored.
        """
        if not items:
            return []
        started = time.perf_counter()
        outcomes: list[Outcome | None] = [None] * len(items)
        try:
            decided = self._commit(items, transport, outcomes)
        except StorageError as e:
            kind = "unavailable" if isinstance(e, StorageUnavailable) else "error"
            metrics.STORAGE_ERRORS.labels(transport, kind).inc()
            raise
        for idx, reason in decided:
            if outcomes[idx] is not None:
                continue
            rid = items[idx][1].id
            if reason is None:
                outcomes[idx] = Outcome(rid, "duplicate")
            else:
                outcomes[idx] = Outcome(rid, "rejected", reason, _DB_DETAIL.get(reason))
        result = [
            o if o is not None else Outcome(items[idx][1].id, "accepted")
            for idx, o in enumerate(outcomes)
        ]
        elapsed = time.perf_counter() - started
        self.last = BatchStats(len(items), elapsed)
        metrics.record_batch(transport, elapsed, ((o.status, o.reason) for o in result))
        return result

    def _commit(
        self,
        items: Sequence[tuple[str, Parsed]],
        transport: str,
        outcomes: list[Outcome | None],
    ) -> list[tuple[int, str | None]]:
        """One transaction: stage, lock, decide + insert. Fills pre-decided outcomes."""
        with translate_errors(), self.pool.connection() as conn, conn.cursor() as cur:
            with cur.copy(q("copy_staging_readings")) as copy:
                for idx, (provider_id, parsed) in enumerate(items):
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
                                    parsed.latitude,
                                    parsed.longitude,
                                    None,
                                    transport,
                                )
                            )
                            continue
                        parsed = refusal
                    outcomes[idx] = Outcome(parsed.id, "rejected", parsed.reason, parsed.detail)
                    rid = parsed.id if parsed.id and len(parsed.id) <= MAX_ID_LENGTH else None
                    if rid and "\x00" in rid:
                        rid = None
                    copy.write_row(
                        (
                            idx,
                            provider_id,
                            rid,
                            None,
                            None,
                            None,
                            None,
                            None,
                            parsed.reason,
                            transport,
                        )
                    )
            with cur.copy(q("copy_staging_components")) as copy:
                for idx, (_, parsed) in enumerate(items):
                    if outcomes[idx] is None and isinstance(parsed, Reading):
                        for c in parsed.components:
                            copy.write_row(
                                (idx, c.name, c.value, c.unit, c.orig_value, c.orig_unit)
                            )
            cur.execute(q("lock_batch_subjects"))
            cur.execute(q("gate_batch"))
            decided = cur.fetchall()
            conn.commit()
            return decided
