"""The Open mHealth corpus (../shared/omh/test-data/omh, from openmhealth/schemas): every
shouldPass body of the nine v1 types is a valid reading of the version its
folder names, every shouldFail body is refused. Nothing is skipped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas import TYPES, Reading, Refusal, parse_data_point
from tests.support.shared_data import shared_path

DATA = shared_path("omh/test-data/omh")
NOW = datetime(2030, 1, 1, tzinfo=UTC)  # the corpus dates run to 2023
FILES = sorted(p for t in TYPES for p in (DATA / t).glob("*/should*/*.json"))


def _data_point(path: Path) -> dict[str, object]:
    version, name = path.parent.parent.name, path.parent.parent.parent.name
    return {
        "header": {
            "id": f"corpus-{name}-{version}-{path.stem}",
            "creation_date_time": "2021-06-01T12:00:00Z",
            "schema_id": {"namespace": "omh", "name": name, "version": version},
            "user_id": "corpus-user",
        },
        "body": json.loads(path.read_text()),
    }


def _id(path: Path) -> str:
    return str(path.relative_to(DATA))


def test_the_whole_corpus_is_here() -> None:
    assert len(FILES) == 191
    assert {p.parent.parent.parent.name for p in FILES} == set(TYPES)


@pytest.mark.parametrize("path", [p for p in FILES if p.parent.name == "shouldPass"], ids=_id)
def test_should_pass(path: Path) -> None:
    dp = _data_point(path)
    result = parse_data_point(dp, now=NOW)
    assert isinstance(result, Reading), result
    assert result.type == path.parent.parent.parent.name
    assert result.id == dp["header"]["id"]  # type: ignore[index]
    assert result.user_ref == "corpus-user"
    assert result.effective_time.utcoffset() is not None
    assert result.components


@pytest.mark.parametrize("path", [p for p in FILES if p.parent.name == "shouldFail"], ids=_id)
def test_should_fail(path: Path) -> None:
    result = parse_data_point(_data_point(path), now=NOW)
    assert isinstance(result, Refusal), result
    assert result.reason == "invalid_schema", result
    assert result.id == _data_point(path)["header"]["id"]  # type: ignore[index]
