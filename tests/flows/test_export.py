"""Exports read back with pyarrow and DuckDB: layout, schema, counts, checksums, consent."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flows.export
from core.outputs import pseudonym
from flows.export import export_salt, run_export
from store import registry as store_registry
from tests.flows.helpers import Registry, Subject

D1 = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
D2 = datetime(2026, 1, 11, 23, 30, tzinfo=UTC)
LAT, LON = 60.16987, 24.93842

# The contract's long format, written out here rather than imported.
EXPECTED_SCHEMA = pa.schema(
    [
        pa.field("pseudonym", pa.string(), nullable=False),
        # string values, dictionary-encoded like the hive partition key it repeats
        pa.field("type", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("component", pa.string(), nullable=False),
        pa.field("effective_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
    ]
)


@pytest.fixture
def people(registry: Registry, conn: psycopg.Connection) -> dict[str, Subject]:
    r = registry
    s = {
        "p1": r.subject(("collection", "location", "analytics", "research")),
        "p2": r.subject(("collection", "research")),
        "limited": r.subject(("collection", "research"), types=["heart-rate"]),
        "fi": r.subject(("collection", "analytics", "research"), residency="FI"),
        "no_research": r.subject(("collection", "analytics")),
        "withdrawn": r.subject(("collection", "research")),
        "future": r.subject(("collection", "research"), valid_from=D2 + timedelta(days=3650)),
    }
    store_registry.withdraw_consent(conn, s["withdrawn"].consents["research"], "test")
    conn.commit()

    # p1: 3 heart rate (with coordinates), 2 blood pressure (4 rows), 1 step count -> 8 rows;
    # never: an erroneous reading, geoposition.
    r.readings(
        s["p1"],
        "heart-rate",
        [(D1, 61), (D1 + timedelta(hours=1), 62), (D2, 63)],
        coords=(LAT, LON),
    )
    r.readings(s["p1"], "heart-rate", [(D1, 190)], erroneous=True)
    r.readings(s["p1"], "blood-pressure", [(D1, (121, 79)), (D2, (122, 78))])
    r.readings(s["p1"], "geoposition", [(D1, (LAT, LON)), (D2, (LAT, LON))], coords=(LAT, LON))
    r.readings(s["p1"], "step-count", [(D2, 4321)])
    # p2: 2 heart rate, 1 body weight -> 3 rows.
    r.readings(s["p2"], "heart-rate", [(D1, 71), (D2, 72)])
    r.readings(s["p2"], "body-weight", [(D2, 80.5)])
    # limited: research covers heart rate only -> 1 row.
    r.readings(s["limited"], "heart-rate", [(D1, 81)])
    r.readings(s["limited"], "blood-glucose", [(D1, 99), (D2, 101)])
    # fi: 2 rows, only in FI exports.
    r.readings(s["fi"], "heart-rate", [(D1, 91), (D2, 92)])
    for name in ("no_research", "withdrawn", "future"):
        r.readings(s[name], "heart-rate", [(D1, 55), (D2, 56)])

    # Groups: open for p1 (exported), closed for p2, open but no research / no analytics.
    now = datetime.now(UTC)
    for name, until in (
        ("p1", None),
        ("p2", now - timedelta(days=1)),
        ("no_research", None),
        ("limited", None),
        ("fi", None),
    ):
        conn.execute(
            "INSERT INTO group_memberships (subject_id, group_key, rule_version, evidence,"
            " valid_from, valid_until) VALUES (%s, 'heart_rate_high', 'v1', '{\"hr_n\": 10}',"
            " %s, %s)",
            (s[name].subject_id, now - timedelta(days=2), until),
        )
    conn.commit()
    return s


def read_manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "_manifest.json").read_text())


def readings_table(path: Path) -> pa.Table:
    files = sorted((path / "readings").rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])


def check_files(path: Path) -> dict[str, Any]:
    """Every file listed, none unlisted, rows and sha256 as the manifest says."""
    manifest = read_manifest(path)
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*.parquet")}
    assert set(listed) == on_disk
    for rel, entry in listed.items():
        data = (path / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["bytes"] == len(data)
        pf = pq.ParquetFile(path / rel)
        assert pf.metadata.num_rows == entry["rows"]
        if entry["kind"] == "readings":
            assert pf.schema_arrow.equals(EXPECTED_SCHEMA, check_metadata=False)
            m = re.fullmatch(
                r"readings/type=([a-z-]+)/date=(\d{4}-\d{2}-\d{2})/part-\d+\.parquet", rel
            )
            assert m, rel
            t = pf.read()
            assert set(t.column("type").to_pylist()) == {m.group(1)}
            assert {v.date().isoformat() for v in t.column("effective_time").to_pylist()} == {
                m.group(2)
            }
    return manifest


def forbidden_needles(registry: Registry, people: dict[str, Subject]) -> list[bytes]:
    needles = [registry.provider_id.encode(), registry.provider_id.replace("-", "").encode()]
    for s in people.values():
        needles += [
            s.subject_id.encode(),
            s.subject_id.replace("-", "").encode(),
            bytes.fromhex(s.subject_id.replace("-", "")),
            s.user_ref.encode(),
        ]
    for coord in (LAT, LON):
        needles += [repr(coord).encode(), struct.pack("<d", coord), struct.pack(">d", coord)]
    return needles


def test_eu_export_layout_schema_counts_and_consent(
    db_url: str,
    conn: psycopg.Connection,
    registry: Registry,
    people: dict[str, Subject],
    master_key: bytes,
    tmp_path: Path,
) -> None:
    result = run_export(db_url, master_key, tmp_path / "exports", "EU", actor="test")
    path = Path(result["path"])
    assert path.parent == (tmp_path / "exports").resolve()
    assert [p.name for p in path.parent.iterdir()] == [result["export_id"]]  # no temp dir left
    manifest = check_files(path)

    assert result["rows"] == 12 and result["subjects"] == 3
    assert manifest["rows"] == {"readings": 12, "groups": 1}
    assert manifest["region"] == "EU" and manifest["export_id"] == result["export_id"]
    assert manifest["schema"]["readings"][3] == {
        "name": "effective_time",
        "type": "timestamp[us, tz=UTC]",
        "nullable": False,
    }
    cutoff = datetime.fromisoformat(manifest["cutoff"])
    assert abs(cutoff - datetime.now(UTC)) < timedelta(minutes=5)

    table = readings_table(path)
    assert table.num_rows == 12
    salt = export_salt(conn, master_key, result["export_id"])
    names = {pseudonym(salt, s.subject_id): n for n, s in people.items()}
    per_person = Counter(names[p] for p in table.column("pseudonym").to_pylist())
    assert per_person == {"p1": 8, "p2": 3, "limited": 1}
    assert set(table.column("type").to_pylist()) == {
        "heart-rate",
        "blood-pressure",
        "step-count",
        "body-weight",
    }
    assert sorted(
        table.filter(pa.compute.equal(table["type"], "blood-pressure"))["value"].to_pylist()
    ) == [78, 79, 121, 122]
    assert set(table.column("unit").to_pylist()) == {"/min", "mm[Hg]", "{steps}", "kg"}

    groups = pq.read_table(path / "groups" / "part-00000.parquet")
    assert [names[p] for p in groups.column("pseudonym").to_pylist()] == ["p1"]
    assert json.loads(groups.column("evidence")[0].as_py()) == {"hr_n": 10}

    # DuckDB over the hive layout agrees with the manifest.
    con = duckdb.connect()
    glob = f"{path}/readings/*/*/*.parquet"
    counts = con.execute(
        "SELECT count(*), count(DISTINCT pseudonym), count(DISTINCT date)"
        " FROM read_parquet(?, hive_partitioning = true)",
        [glob],
    ).fetchone()
    assert counts is not None
    rows, persons, dates = counts
    assert (rows, persons, dates) == (12, 3, 2)
    assert con.execute(
        "SELECT count(*) FROM read_parquet(?, hive_partitioning = true)"
        " WHERE date = DATE '2026-01-11' AND type = 'heart-rate'",
        [glob],
    ).fetchone() == (2,)

    # Nothing identifying in any byte of any file, compressed or not.
    for f in path.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for needle in forbidden_needles(registry, people):
                assert needle not in data, (f, needle)
    text = json.dumps(table.to_pylist(), default=str) + json.dumps(groups.to_pylist(), default=str)
    for s in people.values():
        assert s.subject_id not in text and s.user_ref not in text
    assert "latitude" not in text and "longitude" not in text

    # Recorded: the export, the subjects disclosed, an audit row.
    row = conn.execute(
        "SELECT region, subject_count, row_count, created_by, path FROM exports"
    ).fetchone()
    assert row == ("EU", 3, 12, "test", str(path))
    disclosed = {r[0] for r in conn.execute("SELECT subject_id::text FROM export_subjects")}
    assert disclosed == {people[n].subject_id for n in ("p1", "p2", "limited")}
    [(detail,)] = conn.execute(
        "SELECT detail FROM audit_log WHERE action = 'export.disclose'"
    ).fetchall()
    assert detail["export_id"] == result["export_id"] and detail["subject_count"] == 3


def test_fi_export_has_fi_residents_and_fresh_pseudonyms(
    db_url: str,
    conn: psycopg.Connection,
    people: dict[str, Subject],
    master_key: bytes,
    tmp_path: Path,
) -> None:
    eu = run_export(db_url, master_key, tmp_path, "EU")
    fi = run_export(db_url, master_key, tmp_path, "FI")
    eu2 = run_export(db_url, master_key, tmp_path, "EU")
    assert fi["rows"] == 14 and fi["subjects"] == 4
    check_files(Path(fi["path"]))

    fi_salt = export_salt(conn, master_key, fi["export_id"])
    fi_table = readings_table(Path(fi["path"]))
    assert pseudonym(fi_salt, people["fi"].subject_id) in set(fi_table["pseudonym"].to_pylist())
    eu_table = readings_table(Path(eu["path"]))
    eu_salt = export_salt(conn, master_key, eu["export_id"])
    assert pseudonym(eu_salt, people["fi"].subject_id) not in set(eu_table["pseudonym"].to_pylist())

    sets = [set(readings_table(Path(e["path"]))["pseudonym"].to_pylist()) for e in (eu, fi, eu2)]
    assert len(sets[0]) == 3 and len(sets[2]) == 3
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    groups = pq.read_table(Path(fi["path"]) / "groups")
    fi_groups = {p for p in groups["pseudonym"].to_pylist()}
    assert fi_groups == {pseudonym(fi_salt, people[n].subject_id) for n in ("p1", "fi")}


def test_small_blocks_and_files_give_the_same_rows(
    db_url: str, people: dict[str, Subject], master_key: bytes, tmp_path: Path
) -> None:
    whole = run_export(db_url, master_key, tmp_path, "FI")
    seen: list[int] = []
    split = run_export(
        db_url, master_key, tmp_path, "FI", block_size=256, rows_per_file=1, progress=seen.append
    )
    manifest = check_files(Path(split["path"]))
    assert len(seen) > 1 and sum(seen) == 14
    assert len([f for f in manifest["files"] if f["kind"] == "readings"]) == 14

    def content(path: str) -> Counter[tuple[Any, ...]]:
        t = readings_table(Path(path)).drop_columns(["pseudonym"])
        return Counter(tuple(r.values()) for r in t.to_pylist())

    assert content(split["path"]) == content(whole["path"])


def test_a_failed_export_leaves_nothing(
    db_url: str,
    conn: psycopg.Connection,
    people: dict[str, Subject],
    master_key: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(root: Path, manifest: dict[str, Any]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(flows.export, "write_manifest", broken)
    with pytest.raises(OSError, match="disk full"):
        run_export(db_url, master_key, tmp_path, "EU")
    assert list(tmp_path.iterdir()) == []
    assert conn.execute("SELECT count(*) FROM exports").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM export_subjects").fetchone() == (0,)


def test_an_export_with_nobody_is_still_complete(
    db_url: str, master_key: bytes, tmp_path: Path
) -> None:
    result = run_export(db_url, master_key, tmp_path, "EU")
    assert result["rows"] == 0 and result["subjects"] == 0
    manifest = check_files(Path(result["path"]))
    assert [f["path"] for f in manifest["files"]] == ["groups/part-00000.parquet"]


def test_analyst_doc_examples_run_on_a_real_export(
    db_url: str, people: dict[str, Subject], master_key: bytes, tmp_path: Path
) -> None:
    result = run_export(db_url, master_key, tmp_path, "EU")
    doc = (Path(__file__).resolve().parents[2] / "docs" / "analysts.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 2
    placeholder = '"exports/20260301T023000Z-eu-5f3a9c1e"'
    namespaces = []
    for block in blocks:
        assert placeholder in block
        ns: dict[str, Any] = {}
        exec(block.replace(placeholder, repr(result["path"])), ns)  # noqa: S102
        namespaces.append(ns)

    duck, pandas_ns = namespaces
    # Heart rate on 10 Jan: 61, 62 (p1), 71 (p2), 81 (limited); on 11 Jan: 63, 72.
    assert duck["daily_heart_rate"] == [
        (datetime(2026, 1, 10).date(), 3, 66.5),
        (datetime(2026, 1, 11).date(), 2, 67.5),
    ]
    assert duck["systolic_by_group"] == [("heart_rate_high", 1, 121.5)]
    per_person = pandas_ns["per_person"]
    assert int(per_person["count"].sum()) == 3 + 2 + 1 + 1  # heart rate and body weight rows
    assert len(pandas_ns["groups"]) == 1


def group_rows(conn: psycopg.Connection, subject: Subject, key: str, evidence: dict) -> None:
    conn.execute(
        "INSERT INTO group_memberships (subject_id, group_key, rule_version, evidence,"
        " valid_from) VALUES (%s, %s, 'v1', %s, now() - interval '1 day')",
        (subject.subject_id, key, json.dumps(evidence)),
    )


WINDOW = {"window_from": "2026-01-01T00:00:00+00:00", "window_until": "2026-01-31T00:00:00+00:00"}
EVIDENCE = {
    "heart_rate_high": {"hr_n": 12, "hr_median": 104.5, "min_readings": 10, **WINDOW},
    "blood_pressure_stage_2": {
        "bp_n": 6,
        "systolic_mean": 151.25,
        "diastolic_mean": 97.5,
        "min_readings": 3,
        **WINDOW,
    },
    "engagement_regular": {"readings_n": 40, "active_day_ratio": 0.9, "min_readings": 24},
}


def test_only_what_the_research_consent_covers_is_exported(
    db_url: str,
    conn: psycopg.Connection,
    registry: Registry,
    master_key: bytes,
    tmp_path: Path,
) -> None:
    """Issue 3: group rows are derived under analytics consent; research may cover less."""
    names: dict[str, Subject] = {}
    for name, research in (
        ("hr_only", {"types": ["heart-rate"]}),
        ("everything", {}),
        ("one_provider", {"provider_id": registry.provider_id}),
    ):
        s = registry.subject(("collection", "analytics"))
        store_registry.grant_consent(conn, s.subject_id, "research", "test", **research)
        conn.commit()
        registry.readings(s, "heart-rate", [(D1, 101), (D2, 108)])
        registry.readings(s, "blood-pressure", [(D1, (150, 97)), (D2, (152, 98))])
        for key, evidence in EVIDENCE.items():
            group_rows(conn, s, key, evidence)
        names[name] = s
    conn.commit()

    e = run_export(db_url, master_key, tmp_path, "EU")
    salt = export_salt(conn, master_key, e["export_id"])
    who = {pseudonym(salt, s.subject_id): name for name, s in names.items()}
    groups = pq.read_table(Path(e["path"]) / "groups").to_pylist()
    by_subject: dict[str, set[str]] = {name: set() for name in names}
    for row in groups:
        by_subject[who[row["pseudonym"]]].add(row["group_key"])
    assert by_subject == {
        "hr_only": {"heart_rate_high"},  # not the BP group, nor engagement (every type)
        "everything": set(EVIDENCE),
        "one_provider": set(),  # evidence aggregates every provider's readings
    }
    hr_only = [r for r in groups if who[r["pseudonym"]] == "hr_only"]
    text = json.dumps(hr_only, default=str)
    assert "systolic" not in text and "151.25" not in text

    readings = readings_table(Path(e["path"])).to_pylist()
    types: dict[str, set[str]] = {name: set() for name in names}
    for r in readings:
        types[who[r["pseudonym"]]].add(r["type"])
    assert types == {
        "hr_only": {"heart-rate"},
        "everything": {"heart-rate", "blood-pressure"},
        "one_provider": {"heart-rate", "blood-pressure"},  # its provider's readings
    }
    assert read_manifest(Path(e["path"]))["rows"] == {"readings": 2 + 6 + 6, "groups": 4}


def test_export_and_purge_files_are_private(
    db_url: str,
    conn: psycopg.Connection,
    people: dict[str, Subject],
    master_key: bytes,
    tmp_path: Path,
) -> None:
    """Issue 13: files 0600, directories 0700, whatever the umask lets through."""
    from rights.purge import purge_exports

    def modes(root: Path) -> set[tuple[str, int]]:
        return {
            ("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777)
            for p in [root, *root.rglob("*")]
        }

    old = os.umask(0o022)
    try:
        root = tmp_path / "exports"
        e = run_export(db_url, master_key, root, "FI")
        assert modes(root) == {("dir", 0o700), ("file", 0o600)}
        assert len(list(root.rglob("*.parquet"))) > 3
        # The purge's rewrites and manifest too.
        store_registry.withdraw_consent(conn, people["p1"].consents["research"], "test")
        conn.commit()
        before = {p: p.stat().st_ino for p in Path(e["path"]).rglob("*.parquet")}
        assert purge_exports(db_url, master_key, actor="test")["exports_purged"]
        after = {p: p.stat().st_ino for p in Path(e["path"]).rglob("*.parquet")}
        assert any(before.get(p) != ino for p, ino in after.items())  # files were rewritten
        assert modes(root) == {("dir", 0o700), ("file", 0o600)}
    finally:
        os.umask(old)
