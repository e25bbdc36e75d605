"""A world of subjects with mixed consents, objections, residencies and groups,
and oracles in plain Python over the same world (no SQL): who belongs in an
audience, which rows a partner receives, what each statistics cell holds.

The world is built through the registry (consents, objections, partners) and
COPY (readings); group memberships are inserted as the groups flow would
leave them. Everything an oracle needs is kept here as the world was
described, never read back from the database.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from core.crypto import partner_key
from core.outputs import pseudonym
from store import objections, partners
from store import registry as store_registry
from tests.flows.helpers import COMPONENTS, UNITS, Registry, Subject

DAY0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
DAYS = 14
LAT, LON = 60.16987, 24.93842
GROUP = "heart_rate_high"
OTHER_GROUP = "activity_active"
N = 40


@dataclass
class Person:
    i: int
    subject: Subject
    residency: str
    marketing: bool = False  # an unwithdrawn marketing consent covering now
    analytics: bool = False
    research: bool = False
    research_types: list[str] | None = None
    groups: set[str] = field(default_factory=set)  # open memberships now
    objections: list[tuple[str, str | None]] = field(default_factory=list)  # unlifted
    readings: list[tuple[str, str, datetime, float, bool]] = field(default_factory=list)

    @property
    def sid(self) -> str:
        return self.subject.subject_id

    def objects(self, purpose: str, partner: str | None = None) -> bool:
        return any(p == purpose and (who is None or who == partner) for p, who in self.objections)


@dataclass
class World:
    conn: psycopg.Connection
    master: bytes
    registry: Registry
    people: list[Person]
    partners: dict[str, dict[str, Any]]  # name -> {partner_id, region, purposes, types}

    def partner_id(self, name: str) -> str:
        return str(self.partners[name]["partner_id"])

    def pseudonym(self, partner: str, sid: str) -> str:
        return pseudonym(partner_key(self.master, self.partner_id(partner)), sid)

    def person(self, sid: str) -> Person:
        return next(p for p in self.people if p.sid == sid)

    # Oracles ---------------------------------------------------------------

    def audience(self, group: str, partner: str | None = None) -> set[str]:
        """Subject ids that belong in the audience (CONTRACT v2)."""
        out = set()
        for p in self.people:
            if group not in p.groups or not p.analytics or not p.marketing:
                continue
            if p.objects("marketing"):
                continue
            if partner is not None:
                info = self.partners[partner]
                if p.objects("disclosure", self.partner_id(partner)):
                    continue
                if p.residency == "FI" and info["region"] != "FI":
                    continue
            out.add(p.sid)
        return out

    def disclosure(self, partner: str) -> Counter[tuple[str, str, str, datetime, float, str]]:
        """(subject id, type, component, time, value, unit) the partner receives."""
        info = self.partners[partner]
        rows: Counter[tuple[str, str, str, datetime, float, str]] = Counter()
        for p in self.people:
            if p.objects("disclosure", self.partner_id(partner)):
                continue
            if p.residency == "FI" and info["region"] != "FI":
                continue
            for type_, comp, when, value, erroneous in p.readings:
                if erroneous or type_ not in info["types"] or type_ == "geoposition":
                    continue
                rows[(p.sid, type_, comp, when, value, UNITS[comp])] += 1
        return rows

    def statistics(self, region: str, period: str) -> dict[tuple[Any, ...], dict[str, Any]]:
        """Every cell, unsuppressed: key (type, component, period_start, group)."""
        values: dict[tuple[Any, ...], list[float]] = defaultdict(list)
        subjects: dict[tuple[Any, ...], set[str]] = defaultdict(set)
        for p in self.people:
            if not p.research or p.objects("research"):
                continue
            if p.residency == "FI" and region != "FI":
                continue
            groups = [None, *sorted(p.groups if p.analytics else set())]
            for type_, comp, when, value, erroneous in p.readings:
                if erroneous or type_ == "geoposition":
                    continue
                if p.research_types is not None and type_ not in p.research_types:
                    continue
                for g in groups:
                    key = (type_, comp, period_start(when, period), g)
                    values[key].append(value)
                    subjects[key].add(p.sid)
        cells = {}
        for key, vals in values.items():
            cells[key] = {
                "subjects": len(subjects[key]),
                "n": len(vals),
                "mean": statistics.fmean(vals),
                "sd": statistics.stdev(vals) if len(vals) > 1 else None,
                "p10": percentile_cont(vals, 0.1),
                "p50": percentile_cont(vals, 0.5),
                "p90": percentile_cont(vals, 0.9),
            }
        return cells


def period_start(when: datetime, period: str) -> date:
    d = when.astimezone(UTC).date()
    if period == "week":
        return d - timedelta(days=d.weekday())
    if period == "month":
        return d.replace(day=1)
    return d


def percentile_cont(values: list[float], q: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between order statistics."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def membership(
    conn: psycopg.Connection, sid: str, group: str, until: datetime | None = None
) -> None:
    now = datetime.now(UTC)
    conn.execute(
        "INSERT INTO group_memberships (subject_id, group_key, rule_version, evidence,"
        " valid_from, valid_until) VALUES (%s, %s, 'v1', '{\"hr_n\": 10}', %s, %s)",
        (sid, group, now - timedelta(days=3), until),
    )


def build_world(conn: psycopg.Connection, master: bytes, n: int = N) -> World:
    """N subjects; who holds what follows from their number i (see the comments)."""
    r = Registry(conn, master)
    plist: dict[str, dict[str, Any]] = {}
    for name, region, purposes, types in (
        ("A", "EU", ["marketing", "disclosure"], ["heart-rate", "blood-pressure"]),
        ("B", "FI", ["marketing", "disclosure"], ["heart-rate", "step-count", "geoposition"]),
        ("C", "EU", ["disclosure"], ["heart-rate"]),
        ("D", "FI", ["marketing"], None),
    ):
        pid = partners.add_partner(
            conn, f"partner-{name}-{uuid.uuid4().hex[:6]}", region, purposes, types, "test"
        )["partner_id"]
        plist[name] = {"partner_id": pid, "region": region, "purposes": purposes, "types": types}
    conn.commit()
    world = World(conn, master, r, [], plist)
    past = datetime.now(UTC) - timedelta(days=1)
    for i in range(n):
        residency = "FI" if i % 4 == 0 else "EU"
        s = r.subject(("collection",), residency=residency)
        p = Person(i, s, residency)
        if i % 5 != 1:
            _consent(conn, s, "analytics")
            p.analytics = True
        if i % 3 != 2:
            types = ["heart-rate", "blood-pressure"] if i % 6 == 4 else None
            _consent(conn, s, "research", types=types)
            p.research, p.research_types = True, types
        elif i % 9 == 5:  # research withdrawn
            store_registry.withdraw_consent(conn, _consent(conn, s, "research"), "test")
        if i % 2 == 0:
            cid = _consent(conn, s, "marketing")
            p.marketing = True
            if i % 10 == 4:  # withdrawn
                store_registry.withdraw_consent(conn, cid, "test")
                p.marketing = False
        elif i % 7 == 1:  # expired yesterday
            _consent(conn, s, "marketing", valid_until=past)
        elif i % 7 == 5:  # not yet valid
            _consent(conn, s, "marketing", valid_from=datetime.now(UTC) + timedelta(days=30))
        # groups: the group for most, an ended membership for some, a second group
        if i % 3 != 1:
            membership(conn, s.subject_id, GROUP)
            p.groups.add(GROUP)
        else:
            membership(conn, s.subject_id, GROUP, until=past)
        if i % 4 == 1:
            membership(conn, s.subject_id, OTHER_GROUP)
            p.groups.add(OTHER_GROUP)
        # objections (and lifted ones, which count for nothing)
        for purpose, partner, when in (
            ("marketing", None, i % 7 == 3),
            ("disclosure", None, i % 11 == 5),
            ("disclosure", "A", i % 6 == 2),
            ("disclosure", "B", i % 10 == 7),
            ("research", None, i % 8 == 7),
        ):
            if when:
                pid = world.partner_id(partner) if partner else None
                objections.add_objection(conn, master, s.subject_id, purpose, "test", pid)
                p.objections.append((purpose, pid))
        if i % 9 == 0:
            oid = objections.add_objection(conn, master, s.subject_id, "marketing", "test")
            objections.lift_objection(conn, oid["objection_id"], "test")
        conn.commit()
        _readings(r, p)
        world.people.append(p)
    return world


def _consent(conn: psycopg.Connection, s: Subject, purpose: str, **kwargs: Any) -> str:
    cid = store_registry.grant_consent(conn, s.subject_id, purpose, "test", **kwargs)
    return str(cid["consent_id"])


def _readings(r: Registry, p: Person) -> None:
    """Heart rate daily, blood pressure every other day, steps on some days, a
    geoposition with coordinates and an erroneous heart rate now and then."""
    i = p.i
    batches: dict[tuple[str, bool, bool], list[tuple[datetime, tuple[float, ...]]]] = defaultdict(
        list
    )
    for d in range(DAYS):
        t = DAY0 + timedelta(days=d, hours=7 + i % 5)
        batches[("heart-rate", d % 5 == 0, False)].append((t, (float(50 + (i * 7 + d * 3) % 60),)))
        if (d + i) % 2 == 0:
            bp = (float(100 + (i * 3 + d) % 50), float(60 + (i + d * 2) % 30))
            batches[("blood-pressure", False, False)].append((t + timedelta(hours=1), bp))
        if d % 3 == i % 3:
            steps = (float(1000 + i * 250 + d * 17),)
            batches[("step-count", False, False)].append((t + timedelta(hours=10), steps))
    batches[("geoposition", True, False)].append((DAY0 + timedelta(hours=12), (LAT, LON)))
    batches[("heart-rate", False, True)].append((DAY0 + timedelta(hours=3), (250.0,)))
    for (type_, coords, erroneous), points in batches.items():
        r.readings(
            p.subject, type_, points, coords=(LAT, LON) if coords else None, erroneous=erroneous
        )
        for when, values in points:
            for comp, v in zip(COMPONENTS[type_], values, strict=True):
                p.readings.append((type_, comp, when, v, erroneous))


def needles(world: World) -> list[bytes]:
    """Bytes that must never be in an output file: ids, user refs, coordinates."""
    import struct

    found = [world.registry.provider_id.encode()]
    for p in world.people:
        sid = p.sid
        found += [
            sid.encode(),
            sid.replace("-", "").encode(),
            bytes.fromhex(sid.replace("-", "")),
            p.subject.user_ref.encode(),
        ]
    for coord in (LAT, LON):
        found += [repr(coord).encode(), struct.pack("<d", coord), struct.pack(">d", coord)]
    return found


def scan_output(root: Path, forbidden: list[bytes]) -> None:
    """No forbidden bytes in any file under root, compressed or decoded."""
    import json

    import pyarrow.parquet as pq

    for f in root.rglob("*"):
        if not f.is_file():
            continue
        data = f.read_bytes()
        texts = [data]
        if f.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(f).to_pylist(), default=str).encode())
        for text in texts:
            for needle in forbidden:
                assert needle not in text, (f, needle)
