"""The fast path (`schemas.omh_fast.parse_json`, msgspec on the raw bytes) against
the reference path (`orjson.loads` then `parse_data_point`): for the same bytes
it defers or gives exactly the same readings and refusals. Inputs: the Open
mHealth corpus, generated data points of every type and version (valid and
damaged), and damaged bytes. tests/unit/test_schemas.py checks every one of
its own inputs the same way (its `parse` helper)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import TYPES, Reading
from schemas.bodies import BODIES
from schemas.omh_fast import parse_json
from tests.support import fastpath
from tests.support.omh_points import HR, data_points, nearly_valid
from tests.support.shared_data import shared_path

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
CORPUS_NOW = datetime(2030, 1, 1, tzinfo=UTC)
SETTINGS = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- the corpus -----------------------------------------------------------------
def _corpus() -> list[Path]:
    data = shared_path("omh/test-data/omh")
    return sorted(p for t in TYPES for p in (data / t).glob("*/should*/*.json"))


def _corpus_point(path: Path) -> dict[str, Any]:
    version, name = path.parent.parent.name, path.parent.parent.parent.name
    return {
        "header": {
            "id": f"corpus-{path.stem}",
            "creation_date_time": "2021-06-01T12:00:00Z",
            "schema_id": {"namespace": "omh", "name": name, "version": version},
            "user_id": "corpus-user",
        },
        "body": json.loads(path.read_text()),
    }


def test_the_corpus_agrees_and_most_of_it_is_fast() -> None:
    files = _corpus()
    answered = {p: fastpath.check_object(_corpus_point(p), CORPUS_NOW) for p in files}
    valid = [p for p in files if p.parent.name == "shouldPass"]
    fast_valid = [p for p in valid if answered[p]]
    # The rest carry properties the schemas do not name (the reference path
    # reads them); every type and version still has fast valid samples.
    assert len(fast_valid) >= len(valid) // 2, len(fast_valid)
    keys = {(p.parent.parent.parent.name, p.parent.parent.name) for p in fast_valid}
    assert keys >= {(n, v) for (n, v) in BODIES if (n, v) != ("heart-rate", "1.0")}, (
        set(BODIES) - keys
    )


def test_the_whole_corpus_in_one_array_agrees() -> None:
    points = [_corpus_point(p) for p in _corpus()]
    assert not fastpath.check(orjson.dumps(points), CORPUS_NOW)  # deferred, as one is not fast


@SETTINGS
@given(nearly_valid())
def test_nearly_valid_data_points_agree(point: dict[str, Any]) -> None:
    fastpath.check_object(point, NOW)


@SETTINGS
@given(data_points())
def test_generated_data_points_agree(point: dict[str, Any]) -> None:
    fastpath.check_object(point, NOW)


@SETTINGS
@given(st.lists(nearly_valid() | data_points(), max_size=4))
def test_generated_arrays_agree(points: list[dict[str, Any]]) -> None:
    raw = fastpath.encode(points)
    assert raw is not None
    fastpath.check(raw, NOW)


VALID = orjson.dumps(
    {
        "header": {
            "id": "dp-1",
            "creation_date_time": "2024-03-01T11:00:00Z",
            "schema_id": {"namespace": "omh", "name": "heart-rate", "version": "2.0"},
            "acquisition_provenance": {"source_name": "watch", "modality": "sensed"},
            "user_id": "user-1",
        },
        "body": {"heart_rate": HR, "effective_time_frame": {"date_time": "2024-03-01T10:00:00Z"}},
    }
)


@SETTINGS
@given(
    st.integers(0, len(VALID)),
    st.integers(0, 3),
    st.sampled_from(
        [
            b"\xff",
            b"\xc3\xa9",
            b"\\u00e9",
            b"\\ud800",
            b"\\",
            b'"',
            b",",
            b" ",
            b"\x00",
            b"\t",
            b"\n",
            b"1e999",
            b"-0",
            b"[",
            b"}",
            b'"heart_rate":{"value":1,"unit":"beats/min"},',
        ]
    ),  # fmt: skip
)
def test_damaged_bytes_agree(at: int, cut: int, insert: bytes) -> None:
    fastpath.check(VALID[:at] + insert + VALID[at + cut :], NOW)


@pytest.mark.parametrize(
    "raw",
    [
        VALID,
        b"  \n" + VALID + b"\n ",
        b"[" + VALID + b"," + VALID + b"]",
        VALID.replace(b'"body"', b'"body":{},"body"'),  # duplicate keys: the last one counts
        VALID.replace(b'"heart_rate"', b'"heart_rate":{"value":"x","unit":"bpm"},"heart_rate"'),
        VALID.replace(b'"user-1"', b'"\\u00fcser"'),
        VALID.replace(b'"user-1"', b'"\\ud83d\\ude00"'),
        VALID.replace(b'"dp-1"', b'"dp-\\u0000"'),
        VALID.replace(b"62", b"6.2e1"),
        VALID.replace(b"62", b"62.000000000000000000000001"),
        VALID.replace(b"62", b"-0"),
        VALID.replace(b"2024-03-01T10:00:00Z", b"2024-03-01T10:00:00.9999999Z"),
        VALID.replace(b"2024-03-01T10:00:00Z", b"2024-03-01T10:00:00+00:60"),
        VALID.replace(b"2024-03-01T10:00:00Z", b"2024-03-01T10:00:00Z\\n"),
        VALID.replace(b"2024-03-01T11:00:00Z", b"0001-01-01T00:00:00+01:00"),
        VALID.replace(b"2024-03-01T10:00:00Z", b"0001-01-01T00:00:00+01:00"),
    ],
)
def test_edge_bytes_agree(raw: bytes) -> None:
    fastpath.check(raw, NOW)


def test_the_usual_data_points_are_fast() -> None:
    assert fastpath.check(VALID, NOW)
    assert fastpath.check(b"[" + VALID + b"," + VALID + b"]", NOW)
    [r] = parse_json(VALID, now=NOW) or []
    assert isinstance(r, Reading) and r.id == "dp-1"


def test_max_items_defers_to_the_reference() -> None:
    assert parse_json(b"[" + VALID + b"," + VALID + b"]", now=NOW, max_items=1) is None
    assert parse_json(b"[" + VALID + b"]", now=NOW, max_items=1) is not None
