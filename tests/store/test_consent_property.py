"""Property: for random consent timelines and random readings, what the gate
stores equals what an independent oracle computes from the contract's rules,
and no refused reading's value is stored anywhere.

Consents start and end on the hour; readings land on the hour (exactly on a
consent's `from` or `until`), a microsecond before it, or at half past, so
every comparison of the gate's [from, until) is exercised at its boundary: a
one-character change of the gate (`>=` to `>`, `<` to `<=`) fails this test."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.reading import Component, Reading
from store import registry
from store.writer import Writer

BASE = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = ("heart-rate", "blood-pressure", "step-count", "geoposition")
USERS = ("u0", "u1", "u2")  # u2 is never linked
_serial = itertools.count()


def hours(h: int) -> datetime:
    return BASE + timedelta(hours=h)


@dataclass(frozen=True)
class Grant:
    user: str
    purpose: str  # collection | location
    provider: int | None  # index into the example's providers, None = any
    types: tuple[str, ...] | None
    start: int | None
    end: int | None
    withdrawn: bool


grants = st.builds(
    Grant,
    user=st.sampled_from(USERS[:2]),
    purpose=st.sampled_from(("collection", "collection", "location")),
    provider=st.one_of(st.none(), st.integers(0, 1)),
    types=st.one_of(
        st.none(), st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True).map(tuple)
    ),
    start=st.one_of(st.none(), st.integers(0, 20)),
    end=st.one_of(st.none(), st.integers(0, 40)),
    withdrawn=st.booleans(),
).filter(lambda g: g.start is None or g.end is None or g.start < g.end)


@dataclass(frozen=True)
class Sent:
    provider: int
    user: str
    type: str
    hour: int
    offset: timedelta  # on the hour, just before it, or half past
    rid: int  # small range so duplicates happen
    coords: bool

    @property
    def when(self) -> datetime:
        return hours(self.hour) + self.offset


# On a boundary, a microsecond before one, or between two.
OFFSETS = (timedelta(0), timedelta(0), timedelta(microseconds=-1), timedelta(minutes=30))


def readings(gs: list[Grant]) -> st.SearchStrategy[Sent]:
    """Readings whose hour is often exactly one of the grants' bounds."""
    bounds = sorted({h for g in gs for h in (g.start, g.end) if h is not None})
    hour = st.integers(0, 40)
    if bounds:
        hour = st.one_of(st.sampled_from(bounds), hour)
    return st.builds(
        Sent,
        provider=st.integers(0, 1),
        user=st.sampled_from(USERS),
        type=st.sampled_from(TYPES),
        hour=hour,
        offset=st.sampled_from(OFFSETS),
        rid=st.integers(0, 30),
        coords=st.booleans(),
    )


def build(s: Sent, value: float) -> Reading:
    t = s.when
    if s.type == "geoposition":
        comps = (
            Component("latitude", value, "deg", value, "deg"),
            Component("longitude", value + 0.5, "deg", value + 0.5, "deg"),
        )
        return Reading(f"r{s.rid}", s.user, s.type, t, comps, latitude=value, longitude=value + 0.5)
    comps = (Component("v", value, "u", value, "u"),)
    if s.type == "blood-pressure":
        comps += (Component("w", value + 0.25, "u", value + 0.25, "u"),)
    lat = value if s.coords else None
    return Reading(f"r{s.rid}", s.user, s.type, t, comps, latitude=lat, longitude=lat)


def oracle(gs: list[Grant], approved: list[tuple[str, ...]], sent: list[Sent]):
    """Expected (status, reason, location_stored) per reading, from the rules alone."""

    def covers(g: Grant, s: Sent, purpose: str) -> bool:
        t = s.when
        return (
            g.purpose == purpose
            and not g.withdrawn
            and g.user == s.user
            and (g.provider is None or g.provider == s.provider)
            and (purpose == "location" or g.types is None or s.type in g.types)
            and (g.start is None or hours(g.start) <= t)
            and (g.end is None or t < hours(g.end))
        )

    seen: set[tuple[int, int, datetime]] = set()
    out = []
    for s in sent:
        location = any(covers(g, s, "location") for g in gs)
        if s.user not in USERS[:2]:
            out.append(("rejected", "unknown_subject", False))
        elif s.type not in approved[s.provider]:
            out.append(("rejected", "type_not_approved", False))
        elif not any(covers(g, s, "collection") for g in gs):
            out.append(("rejected", "no_consent", False))
        elif s.type == "geoposition" and not location:
            out.append(("rejected", "no_consent", False))
        elif (s.provider, s.rid, s.when) in seen:
            out.append(("duplicate", None, False))
        else:
            seen.add((s.provider, s.rid, s.when))
            out.append(("accepted", None, location))
    return out


@pytest.mark.slow
@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    gs=st.lists(grants, max_size=6),
    data=st.data(),
    approved=st.lists(
        st.lists(st.sampled_from(TYPES), min_size=1, unique=True).map(tuple), min_size=2, max_size=2
    ),
)
def test_gate_matches_oracle(
    writer: Writer,
    conn: psycopg.Connection,
    master_key: bytes,
    gs: list[Grant],
    data: st.DataObject,
    approved: list[tuple[str, ...]],
) -> None:
    sent = data.draw(st.lists(readings(gs), min_size=1, max_size=25), label="sent")
    n = next(_serial)
    providers = [
        registry.add_provider(conn, master_key, f"prop-{n}-{i}", types, "test")["provider_id"]
        for i, types in enumerate(approved)
    ]
    subjects = {}
    for user in USERS[:2]:
        subjects[user] = registry.add_subject(conn, "EU", [(p, user) for p in providers], "test")[
            "subject_id"
        ]
    for g in gs:
        cid = registry.grant_consent(
            conn,
            subjects[g.user],
            g.purpose,
            "test",
            provider_id=providers[g.provider] if g.provider is not None else None,
            types=g.types,
            valid_from=hours(g.start) if g.start is not None else None,
            valid_until=hours(g.end) if g.end is not None else None,
        )["consent_id"]
        if g.withdrawn:
            registry.withdraw_consent(conn, cid, "test")
    conn.commit()

    # Distinct, recognisable values: 1000 + n*100 + i, so any leak is findable.
    values = [1000.0 + (n % 1000) * 100 + i for i in range(len(sent))]
    out = writer.write(
        [(providers[s.provider], build(s, v)) for s, v in zip(sent, values, strict=True)], "test"
    )
    expected = oracle(gs, approved, sent)
    assert [(o.status, o.reason) for o in out] == [(e[0], e[1]) for e in expected]

    rows = conn.execute(
        "SELECT orig_value, value, latitude, longitude FROM readings "
        "WHERE provider_id = ANY(%s::uuid[])",
        (providers,),
    ).fetchall()
    conn.commit()
    found_values = {r[0] for r in rows} | {r[1] for r in rows}
    found_coords = {r[2] for r in rows if r[2] is not None}
    for (status, _, location), v, s in zip(expected, values, sent, strict=True):
        if status == "accepted":
            assert v in found_values
            if s.coords or s.type == "geoposition":
                assert (v in found_coords) == location
        elif status == "rejected":
            assert v not in found_values and v not in found_coords
    # Rejections carry reason, provider, id and times only.
    rej = conn.execute(
        "SELECT count(*) FROM rejections WHERE provider_id = ANY(%s::uuid[])", (providers,)
    ).fetchone()
    conn.commit()
    assert rej == (sum(1 for e in expected if e[0] == "rejected"),)
