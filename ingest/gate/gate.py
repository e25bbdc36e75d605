"""The one gate: every transport and `vitals validate` go through `Gate`.

    payload (raw bytes or decoded JSON, Open mHealth or FHIR)
        ──parse──▶ readings and refusals, one per data point, in order
        ──write──▶ the writer (store.writer.Writer, or the CoalescingWriter that
                   shares transactions between requests): one outcome per reading

    gate = Gate(Writer(pool), "mqtt", max_items=5000)      # writes in the caller's thread
    gate = Gate(CoalescingWriter(Writer(pool), "http"), "http")
    gate = Gate(None, "cli")                               # validate only: parse, no write

What a refused reading's provider is told is `refusal(outcome)`: its id, the
reason code and a detail, never a value. The consent decision that counts is
made inside the writer's transaction, not here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from ingest.gate.coalesce import CoalescingWriter
from ingest.gate.payload import Format, ShapeError, detect_format, parse_payload, parse_raw
from schemas.reading import INVALID_SCHEMA, Refusal
from store.writer import Outcome, Parsed

log = logging.getLogger("vitals.gate")


class BatchWriter(Protocol):
    """What the gate writes through: store.writer.Writer, or a fake in unit tests."""

    def write(self, items: Sequence[tuple[str, Parsed]], transport: str) -> list[Outcome]: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """`vitals validate`'s answer for one data point (nothing is stored)."""

    id: str | None
    status: Literal["valid", "invalid"]
    reason: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "status": self.status, "reason": self.reason, "detail": self.detail}


def refusal(outcome: Outcome) -> dict[str, str | None]:
    """`{"id", "reason", "detail"}` of a refused reading, as its provider is told."""
    return {"id": outcome.id, "reason": outcome.reason, "detail": outcome.detail}


class Gate:
    """Parse payloads, write their readings, answer with outcomes in input order.

    `writer` is None for a validate-only gate. `max_items` bounds the data
    points of one payload and `max_bytes` the size of a raw one (ShapeError
    beyond). Thread-safe as its writer is.
    """

    def __init__(
        self,
        writer: BatchWriter | CoalescingWriter | None,
        transport: str,
        *,
        max_items: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.writer = writer
        self.transport = transport
        self.max_items = max_items
        self.max_bytes = max_bytes

    # Parse ---------------------------------------------------------------------

    def parse(
        self, payload: object, fmt: Format | None = "omh", *, now: datetime | None = None
    ) -> list[Parsed]:
        """A payload → one reading or refusal per data point, in order.

        Raw bytes (what a transport should pass: they take the fast path) are
        decoded here; `fmt` None detects the format (see `detect_format`).
        Raises ShapeError when the payload as a whole is malformed (then
        nothing of it may be written): MalformedJSON and TooManyItems for those
        causes.
        """
        if isinstance(payload, bytes | bytearray):
            return parse_raw(
                payload, fmt, now=now, max_items=self.max_items, max_bytes=self.max_bytes
            )[1]
        fmt = fmt or detect_format(payload)
        return parse_payload(payload, fmt, now=now, max_items=self.max_items)

    def parse_or_refuse(
        self, payload: object, fmt: Format = "omh", *, now: datetime | None = None
    ) -> tuple[list[Parsed], bool]:
        """`parse` for a transport that cannot refuse a payload as a whole (MQTT).

        A malformed payload becomes one `invalid_schema` refusal without id;
        the flag says it was malformed. Never raises: a bug in parsing must not
        stop ingestion for everyone.
        """
        try:
            return self.parse(payload, fmt, now=now), False
        except ShapeError as e:
            return [Refusal(None, INVALID_SCHEMA, str(e))], True
        except Exception:
            log.exception("payload could not be parsed", extra={"event": "parse_error"})
            return [Refusal(None, INVALID_SCHEMA, "payload could not be parsed")], True

    def validate(
        self, payload: object, fmt: Format | None = None, *, now: datetime | None = None
    ) -> list[Verdict]:
        """Parse without writing: one verdict per data point, in order.

        The format is detected when not given (a FHIR resource has a
        `resourceType`). A payload malformed as a whole is one invalid verdict.
        """
        try:
            if isinstance(payload, bytes | bytearray):
                _, parsed = parse_raw(
                    payload, fmt, now=now, max_items=self.max_items, max_bytes=self.max_bytes
                )
            else:
                fmt = fmt or detect_format(payload)
                parsed = parse_payload(payload, fmt, now=now, max_items=self.max_items)
        except ShapeError as e:
            return [Verdict(None, "invalid", INVALID_SCHEMA, str(e))]
        return [
            Verdict(p.id, "invalid", p.reason, p.detail)
            if isinstance(p, Refusal)
            else Verdict(p.id, "valid")
            for p in parsed
        ]

    # Write ---------------------------------------------------------------------

    def write(self, items: Sequence[tuple[str, Parsed]]) -> list[Outcome]:
        """Commit `(provider_id, parsed)` items; their outcomes, in order.

        Blocks until committed. Raises StorageUnavailable / StorageError, and
        then nothing of `items` was stored.
        """
        writer = self._require_writer()
        if isinstance(writer, CoalescingWriter):
            return writer.write(items)
        return writer.write(items, self.transport)

    def submit(self, items: Sequence[tuple[str, Parsed]]) -> Future[list[Outcome]]:
        """`write` as a future (it resolves once the items are committed), for
        a caller that must not block, e.g. an event loop (`asyncio.wrap_future`)."""
        writer = self._require_writer()
        if isinstance(writer, CoalescingWriter):
            return writer.submit(items)
        future: Future[list[Outcome]] = Future()
        try:
            future.set_result(writer.write(items, self.transport))
        except Exception as e:
            future.set_exception(e)
        return future

    def ingest(
        self,
        provider_id: str,
        payload: object,
        fmt: Format = "omh",
        *,
        now: datetime | None = None,
    ) -> list[Outcome]:
        """`parse` then `write` one provider's payload: its outcomes, in order.

        Raises ShapeError before anything is written, or what `write` raises.
        """
        parsed = self.parse(payload, fmt, now=now)
        return self.write([(provider_id, p) for p in parsed])

    def refuse(self, items: Sequence[tuple[str, Parsed]], detail: str) -> list[Outcome]:
        """Record every item as an `invalid_schema` refusal with `detail` (for
        readings the database would not store); their outcomes, in order."""
        return self.write([(pid, Refusal(p.id, INVALID_SCHEMA, detail)) for pid, p in items])

    def close(self) -> None:
        """Finish what a coalescing writer holds and stop its thread."""
        if isinstance(self.writer, CoalescingWriter):
            self.writer.close()

    def _require_writer(self) -> BatchWriter | CoalescingWriter:
        if self.writer is None:
            raise RuntimeError("this gate validates only: it has no writer")
        return self.writer
