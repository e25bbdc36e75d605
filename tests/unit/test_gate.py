"""The one gate on a fake writer (no I/O): what every transport and `vitals
validate` get back, in input order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from core.errors import StorageUnavailable
from ingest.gate import CoalescingWriter, Gate, ShapeError, refusal
from schemas.reading import (
    FUTURE_TIMESTAMP,
    IMPLAUSIBLE_VALUE,
    INVALID_SCHEMA,
    NO_CONSENT,
    UNSUPPORTED_TYPE,
    Reading,
    Refusal,
)
from store.writer import Outcome, Parsed
from tests.support.seed import data_point

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PROVIDER = "0b6f5b1e-3c1a-4f5e-9f1e-2f4d6c8a0b1c"


class FakeWriter:
    """The writer's contract without a database: readings of `consented` users
    are accepted once, then duplicates; other readings `no_consent`; refusals
    are recorded as rejected. Records every batch it was given."""

    def __init__(self, consented: tuple[str, ...] = ("alice",), fail: Exception | None = None):
        self.consented = consented
        self.fail = fail
        self.batches: list[tuple[list[tuple[str, Parsed]], str]] = []
        self._stored: set[tuple[str, str]] = set()

    def write(self, items: Sequence[tuple[str, Parsed]], transport: str) -> list[Outcome]:
        self.batches.append((list(items), transport))
        if self.fail is not None:
            raise self.fail
        out: list[Outcome] = []
        for provider, p in items:
            if isinstance(p, Refusal):
                out.append(Outcome(p.id, "rejected", p.reason, p.detail))
            elif p.user_ref not in self.consented:
                out.append(Outcome(p.id, "rejected", NO_CONSENT, "no consent covers it"))
            elif (provider, p.id) in self._stored:
                out.append(Outcome(p.id, "duplicate"))
            else:
                self._stored.add((provider, p.id))
                out.append(Outcome(p.id, "accepted"))
        return out


def point(id: str, user: str = "alice", **kwargs: Any) -> dict[str, Any]:
    return data_point(user, id=id, when=kwargs.pop("when", NOW - timedelta(minutes=5)), **kwargs)


def observation(id: str, user: str = "alice", value: float = 72) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{user}"},
        "effectiveDateTime": (NOW - timedelta(minutes=5)).isoformat(),
        "valueQuantity": {
            "value": value,
            "unit": "beats/minute",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def no_body(id: str) -> dict[str, Any]:
    p = point(id)
    del p["body"]
    return p


def test_outcomes_come_back_in_input_order() -> None:
    writer = FakeWriter()
    gate = Gate(writer, "test")
    payload = [point("a"), no_body("b"), point("c", user="bob"), point("d")]
    outcomes = gate.ingest(PROVIDER, payload, now=NOW)
    assert [(o.id, o.status) for o in outcomes] == [
        ("a", "accepted"),
        ("b", "rejected"),
        ("c", "rejected"),
        ("d", "accepted"),
    ]
    [(items, transport)] = writer.batches  # one batch, in order, under the provider
    assert transport == "test"
    assert [(pid, p.id) for pid, p in items] == [(PROVIDER, x) for x in "abcd"]
    assert [type(p) for _, p in items] == [Reading, Refusal, Reading, Reading]


def test_refusals_carry_the_reason_codes_and_no_value() -> None:
    gate = Gate(FakeWriter(), "test")
    payload = [
        no_body("schema"),
        {
            **point("type"),
            "header": {
                **point("type")["header"],
                "schema_id": {"namespace": "omh", "name": "body-height", "version": "1.0"},
            },
        },
        point("implausible", value=900.0),
        point("future", when=NOW + timedelta(days=2)),
        point("nobody", user="bob"),
        point("fine"),
    ]
    outcomes = gate.ingest(PROVIDER, payload, now=NOW)
    refused = [refusal(o) for o in outcomes if o.status == "rejected"]
    assert [(r["id"], r["reason"]) for r in refused] == [
        ("schema", INVALID_SCHEMA),
        ("type", UNSUPPORTED_TYPE),
        ("implausible", IMPLAUSIBLE_VALUE),
        ("future", FUTURE_TIMESTAMP),
        ("nobody", NO_CONSENT),
    ]
    for r in refused:
        assert set(r) == {"id", "reason", "detail"} and r["detail"]
        assert "900" not in str(r["detail"])  # never a health value


def test_duplicates_pass_through_as_the_writer_decided() -> None:
    gate = Gate(FakeWriter(), "test")
    first = gate.ingest(PROVIDER, [point("a"), point("b")], now=NOW)
    again = gate.ingest(PROVIDER, [point("a"), point("b"), point("c")], now=NOW)
    assert [o.status for o in first] == ["accepted", "accepted"]
    assert [(o.id, o.status) for o in again] == [
        ("a", "duplicate"),
        ("b", "duplicate"),
        ("c", "accepted"),
    ]
    assert not [refusal(o) for o in again if o.status == "rejected"]


@pytest.mark.parametrize("payload", [42, "a string", None, True, b"not json", b"[1,"])
def test_a_wrong_top_level_shape_is_a_shape_error_and_nothing_is_written(
    payload: object,
) -> None:
    writer = FakeWriter()
    gate = Gate(writer, "test")
    with pytest.raises(ShapeError):
        gate.ingest(PROVIDER, payload, now=NOW)
    assert writer.batches == []


def test_fhir_must_be_an_object_and_limits_are_shape_errors() -> None:
    writer = FakeWriter()
    gate = Gate(writer, "test", max_items=2, max_bytes=100)
    with pytest.raises(ShapeError, match="FHIR"):
        gate.parse([observation("o1")], "fhir", now=NOW)
    with pytest.raises(ShapeError, match="at most 2"):
        gate.parse([point("a"), point("b"), point("c")], now=NOW)
    with pytest.raises(ShapeError, match="larger than 100 bytes"):
        gate.parse(orjson.dumps(point("a")), now=NOW)
    assert writer.batches == []


def test_raw_bytes_are_decoded_and_fhir_is_parsed() -> None:
    gate = Gate(FakeWriter(), "test")
    assert [(o.id, o.status) for o in gate.ingest(PROVIDER, orjson.dumps(point("a")))] == [
        ("a", "accepted")
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": observation("o1")}, {"resource": observation("o2", "bob")}],
    }
    outcomes = gate.ingest(PROVIDER, bundle, "fhir", now=NOW)
    assert [(o.id, o.status, o.reason) for o in outcomes] == [
        ("o1", "accepted", None),
        ("o2", "rejected", NO_CONSENT),
    ]


def test_parse_or_refuse_turns_a_malformed_payload_into_one_refusal() -> None:
    gate = Gate(FakeWriter(), "mqtt", max_items=5000, max_bytes=256 * 1024)
    items, malformed = gate.parse_or_refuse(b"this is not json", now=NOW)
    assert malformed and items == [Refusal(None, INVALID_SCHEMA, "payload is not valid JSON")]
    items, malformed = gate.parse_or_refuse(b"42", now=NOW)
    assert malformed and [(i.id, i.reason) for i in items] == [(None, INVALID_SCHEMA)]
    items, malformed = gate.parse_or_refuse(orjson.dumps([point("a"), no_body("b")]), now=NOW)
    assert not malformed and [type(i) for i in items] == [Reading, Refusal]


def test_refuse_records_every_item_as_invalid_schema() -> None:
    writer = FakeWriter()
    gate = Gate(writer, "test")
    parsed = gate.parse([point("a"), no_body("b")], now=NOW)
    outcomes = gate.refuse([(PROVIDER, p) for p in parsed], "could not be stored")
    assert [(o.id, o.status, o.reason, o.detail) for o in outcomes] == [
        ("a", "rejected", INVALID_SCHEMA, "could not be stored"),
        ("b", "rejected", INVALID_SCHEMA, "could not be stored"),
    ]


def test_submit_resolves_after_the_write_or_carries_its_error() -> None:
    gate = Gate(FakeWriter(), "test")
    parsed = gate.parse([point("a")], now=NOW)
    assert [o.status for o in gate.submit([(PROVIDER, p) for p in parsed]).result(0)] == [
        "accepted"
    ]
    failing = Gate(FakeWriter(fail=StorageUnavailable("down")), "test")
    with pytest.raises(StorageUnavailable):
        failing.submit([(PROVIDER, p) for p in parsed]).result(0)
    with pytest.raises(StorageUnavailable):
        failing.write([(PROVIDER, p) for p in parsed])


def test_the_gate_writes_through_a_coalescing_writer_too() -> None:
    writer = FakeWriter()
    gate = Gate(CoalescingWriter(writer, "http"), "http")  # type: ignore[arg-type]
    try:
        parsed = gate.parse([point("a"), no_body("b")], now=NOW)
        outcomes = gate.submit([(PROVIDER, p) for p in parsed]).result(5)
        assert [(o.id, o.status) for o in outcomes] == [("a", "accepted"), ("b", "rejected")]
        assert [o.status for o in gate.write([(PROVIDER, parsed[0])])] == ["duplicate"]
    finally:
        gate.close()
    assert [t for _, t in writer.batches] == ["http", "http"]


def test_validate_parses_without_writing() -> None:
    gate = Gate(None, "cli")
    verdicts = gate.validate([point("a"), no_body("b")], now=NOW)
    assert [v.as_dict() for v in verdicts][0] == {
        "id": "a",
        "status": "valid",
        "reason": None,
        "detail": None,
    }
    assert (verdicts[1].id, verdicts[1].status, verdicts[1].reason) == (
        "b",
        "invalid",
        INVALID_SCHEMA,
    )
    # The same payloads as the transports: FHIR is recognised by its resourceType.
    [fhir] = gate.validate(observation("o1"), now=NOW)
    assert (fhir.id, fhir.status) == ("o1", "valid")
    # A payload malformed as a whole is one invalid verdict.
    assert [(v.id, v.status, v.reason) for v in gate.validate(b"{not json")] == [
        (None, "invalid", INVALID_SCHEMA)
    ]
    assert [v.status for v in gate.validate(42)] == ["invalid"]
    with pytest.raises(RuntimeError, match="validates only"):
        gate.ingest(PROVIDER, point("a"))
