"""Fuzz the signed webhook on a real server: whatever a partner sends, never a 5xx.

Bodies are correctly signed (so they reach the parser and the writer):
arbitrary JSON, arbitrary bytes, and Open mHealth / FHIR payloads with one
part replaced by arbitrary JSON.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.reading import REASONS
from tests.support.http import Api, World, make_world
from tests.support.seed import data_point


# The module's tests share one database and one server (tests.support.http),
# each test isolated by its own provider.
@pytest.fixture(scope="module")
def api(shared_api: Api) -> Api:
    return shared_api


@pytest.fixture
def conn(shared_conn: psycopg.Connection) -> psycopg.Connection:
    return shared_conn


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/fhir+json",
        "application/json; charset=utf-8",
        "",
        "text/plain",
    ]
)
OK_STATUSES = {200, 400, 413, 415}


@pytest.fixture
def world(conn: psycopg.Connection, master_key: bytes) -> World:
    return make_world(conn, master_key)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _paths(v, (*prefix, i))
    return found


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


FHIR_TEMPLATE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "obs-1",
    "status": "final",
    "identifier": [{"value": "fuzz-1"}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/{user}"},
    "effectiveDateTime": "2025-06-01T10:00:00Z",
    "valueQuantity": {
        "value": 70,
        "unit": "/min",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    },
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120, "code": "mm[Hg]"},
        },
    ],
}


def _check(response: Any, payload: Any) -> None:
    assert response.status_code in OK_STATUSES, (response.status_code, response.text[:500])
    body = response.json()
    if response.status_code != 200:
        assert set(body) == {"error", "detail"}
        return
    results = body["results"]
    if isinstance(payload, list):
        assert len(results) == len(payload)
    assert body["accepted"] + body["duplicates"] + body["rejected"] == len(results)
    for item in results:
        assert item["status"] in ("accepted", "duplicate", "rejected")
        assert (item["reason"] in REASONS) == (item["status"] == "rejected")


FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(payload=JSON, content_type=CONTENT_TYPES)
def test_arbitrary_json_never_5xx(api: Api, world: World, payload: Any, content_type: str) -> None:
    _check(api.post_readings(world, payload, content_type=content_type), payload)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_never_5xx(api: Api, world: World, raw: bytes) -> None:
    r = api.post_readings(world, None, body=raw)
    assert r.status_code in OK_STATUSES, (r.status_code, r.text[:300])


@FUZZ
@given(data=st.data(), count=st.integers(1, 3))
def test_mutated_data_points_never_5xx(api: Api, world: World, data: Any, count: int) -> None:
    types = st.sampled_from(
        [
            "heart-rate",
            "blood-pressure",
            "body-weight",
            "step-count",
            "geoposition",
            "blood-glucose",
            "body-temperature",
        ]
    )
    points = [data_point(world.user_ref, data.draw(types)) for _ in range(count)]
    target = data.draw(st.integers(0, count - 1))
    path = data.draw(st.sampled_from(_paths(points[target])))
    points[target] = _replace(points[target], path, data.draw(JSON))
    _check(api.post_readings(world, points), points)


@FUZZ
@given(data=st.data(), bundle=st.booleans())
def test_mutated_fhir_never_5xx(api: Api, world: World, data: Any, bundle: bool) -> None:
    obs = orjson.loads(orjson.dumps(FHIR_TEMPLATE).replace(b"{user}", world.user_ref.encode()))
    path = data.draw(st.sampled_from(_paths(obs)))
    obs = _replace(obs, path, data.draw(JSON))
    payload = (
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": obs}]}
        if bundle
        else obs
    )
    _check(api.post_readings(world, payload, content_type="application/fhir+json"), payload)
