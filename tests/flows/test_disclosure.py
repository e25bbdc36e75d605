"""Disclosures to partners against an oracle over the same world: rows in the
export's long format under the partner's pseudonym, types, regions and
objections, the per-subject log, the access extract, notices after an
objection or erasure (which keeps only the keyed hash), and the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import InputError
from flows.audience import run_audience
from flows.disclosure import run_disclosure
from rights.erasure import erase_subject, subject_hash
from rights.extract import write_extract
from store import objections, partners
from tests.flows.purposes_world import GROUP, World, build_world, needles, scan_output
from tests.flows.test_export import EXPECTED_SCHEMA, check_files
from tests.support.pgtools import pg_dump_data

VITALS = Path(sys.executable).with_name("vitals")


@pytest.fixture
def world(conn: psycopg.Connection, master_key: bytes) -> World:
    return build_world(conn, master_key)


def rows_of(path: Path) -> pa.Table:
    files = sorted((path / "readings").rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])


def as_oracle(world: World, partner: str, table: pa.Table) -> Counter[tuple[object, ...]]:
    names = {world.pseudonym(partner, p.sid): p.sid for p in world.people}
    fields = ("type", "component", "effective_time", "value", "unit")
    return Counter((names[r["pseudonym"]], *(r[f] for f in fields)) for r in table.to_pylist())


def test_each_partner_gets_exactly_the_oracle_rows(
    db_url: str, world: World, master_key: bytes, export_dir: Path, conn: psycopg.Connection
) -> None:
    for partner in ("A", "B", "C"):
        expected = world.disclosure(partner)
        result = run_disclosure(db_url, master_key, export_dir, world.partner_id(partner))
        path = Path(result["path"])
        assert path.parent == (export_dir / "disclosures").resolve()
        manifest = check_files(path)
        table = rows_of(path)
        assert table.schema.equals(EXPECTED_SCHEMA, check_metadata=False)
        assert as_oracle(world, partner, table) == expected
        assert result["rows"] == sum(expected.values()) == manifest["rows"]["readings"]
        subjects = {sid for sid, *_ in expected}
        assert result["subjects"] == len(subjects) == manifest["subject_count"]
        assert set(table.column("type").to_pylist()) <= set(world.partners[partner]["types"])
        assert "geoposition" not in table.column("type").to_pylist()
        assert manifest["partner_id"] == world.partner_id(partner)
        assert any("disclosure objection" in rule for rule in manifest["rules"])
        scan_output(path, needles(world))
        # the log: one row per subject disclosed, rows per type
        logged = {
            sid: (what, n)
            for sid, what, n in conn.execute(
                "SELECT subject_id::text, what, rows FROM partner_disclosures"
                " WHERE disclosure_id = %s AND kind = 'readings'",
                (result["disclosure_id"],),
            )
        }
        per_type: dict[str, Counter[str]] = {}
        for sid, type_, *_ in expected.elements():
            per_type.setdefault(sid, Counter())[type_] += 1
        assert logged == {sid: ({"types": dict(c)}, sum(c.values())) for sid, c in per_type.items()}
    fi = {p.sid for p in world.people if p.residency == "FI"}
    assert not fi & {s for s, *_ in world.disclosure("A")} and fi & {
        s for s, *_ in world.disclosure("B")
    }


def test_same_pseudonym_as_the_partners_audience(
    db_url: str, world: World, master_key: bytes, export_dir: Path
) -> None:
    audience = run_audience(db_url, master_key, export_dir, GROUP, world.partner_id("A"))
    members = set(pq.read_table(Path(audience["path"]) / "members.parquet")["member"].to_pylist())
    disclosed = run_disclosure(db_url, master_key, export_dir, world.partner_id("A"))
    names = set(rows_of(Path(disclosed["path"])).column("pseudonym").to_pylist())
    assert members & names
    other = run_disclosure(db_url, master_key, export_dir, world.partner_id("C"))
    assert not names & set(rows_of(Path(other["path"])).column("pseudonym").to_pylist())


def test_refusals(
    db_url: str, world: World, master_key: bytes, export_dir: Path, conn: psycopg.Connection
) -> None:
    with pytest.raises(InputError) as refused:
        run_disclosure(db_url, master_key, export_dir, world.partner_id("D"))
    assert refused.value.code == "partner_purpose"
    no_types = partners.add_partner(conn, "no-types", "EU", ["disclosure"], None, "test")
    conn.commit()
    with pytest.raises(InputError) as refused:
        run_disclosure(db_url, master_key, export_dir, no_types["partner_id"])
    assert refused.value.code == "partner_types"
    with pytest.raises(InputError) as refused:
        run_disclosure(db_url, master_key, export_dir, "not-a-uuid")
    assert refused.value.code == "invalid_id"


def test_objection_after_disclosure_owes_a_notice_and_stops_the_next(
    db_url: str, world: World, master_key: bytes, export_dir: Path, conn: psycopg.Connection
) -> None:
    disclosed_to_a = {sid for sid, *_ in world.disclosure("A")}
    person = next(p for p in world.people if p.sid in disclosed_to_a)
    run_disclosure(db_url, master_key, export_dir, world.partner_id("A"))
    # an objection for partner C: A is owed nothing (C received nothing yet)
    objections.add_objection(
        conn, master_key, person.sid, "disclosure", "test", world.partner_id("C")
    )
    conn.commit()
    assert partners.notices(conn, world.partner_id("A"), "test") == []
    oid = objections.add_objection(conn, master_key, person.sid, "disclosure", "test")
    conn.commit()
    [notice] = partners.notices(conn, world.partner_id("A"), "test")
    assert notice["kind"] == "objection" and notice["purpose"] == "disclosure"
    assert notice["pseudonym"] == world.pseudonym("A", person.sid)
    assert notice["created_at"] <= datetime.now(UTC)
    again = run_disclosure(db_url, master_key, export_dir, world.partner_id("A"))
    assert world.pseudonym("A", person.sid) not in set(
        rows_of(Path(again["path"])).column("pseudonym").to_pylist()
    )
    assert again["subjects"] == len(disclosed_to_a) - 1
    # lifting lets them go out again
    objections.lift_objection(conn, oid["objection_id"], "test")
    conn.commit()
    third = run_disclosure(db_url, master_key, export_dir, world.partner_id("A"))
    assert third["subjects"] == len(disclosed_to_a)


def test_extract_then_erasure_notice_and_keyed_hash_only(
    db_url: str, world: World, master_key: bytes, export_dir: Path, conn: psycopg.Connection
) -> None:
    person = next(
        p
        for p in world.people
        if p.sid in {s for s, *_ in world.disclosure("B")} and p.sid in world.audience(GROUP, "D")
    )
    disclosure = run_disclosure(db_url, master_key, export_dir, world.partner_id("B"))
    audience = run_audience(db_url, master_key, export_dir, GROUP, world.partner_id("D"))
    objection = objections.add_objection(conn, master_key, person.sid, "research", "test")
    conn.commit()

    out = io.BytesIO()
    write_extract(conn, person.sid, out, "test")
    doc = json.loads(out.getvalue())
    ids = [o["objection_id"] for o in doc["objections"]]
    assert ids[-1] == objection["objection_id"] and doc["objections"][-1]["purpose"] == "research"
    got = {(d["disclosure_id"], d["kind"], d["partner_id"]) for d in doc["partner_disclosures"]}
    assert got == {
        (disclosure["disclosure_id"], "readings", world.partner_id("B")),
        (audience["audience_id"], "audience", world.partner_id("D")),
    }
    readings_entry = next(d for d in doc["partner_disclosures"] if d["kind"] == "readings")
    assert readings_entry["rows"] == sum(
        n for (sid, *_), n in world.disclosure("B").items() if sid == person.sid
    )

    receipt = erase_subject(db_url, master_key, person.sid, "test")
    assert receipt["counts"]["partner_notices"] == 2
    shash = subject_hash(master_key, person.sid)
    for partner in ("B", "D"):
        notices = partners.notices(conn, world.partner_id(partner), "test")
        assert [(n["kind"], n["pseudonym"]) for n in notices] == [
            ("erasure", world.pseudonym(partner, person.sid))
        ]
    assert partners.notices(conn, world.partner_id("A"), "test") == []
    conn.commit()
    kept = conn.execute(
        "SELECT disclosure_id, subject_hash FROM partner_disclosures WHERE subject_id IS NULL"
    ).fetchall()
    assert sorted(kept) == sorted(
        [(disclosure["disclosure_id"], shash), (audience["audience_id"], shash)]
    )
    dump = pg_dump_data(db_url)
    assert person.sid not in dump and person.sid.replace("-", "") not in dump
    assert conn.execute(
        "SELECT count(*) FROM objections WHERE subject_id = %s", (person.sid,)
    ).fetchone() == (0,)
    # a re-run of the erasure owes nothing more
    erase_subject(db_url, master_key, person.sid, "test")
    assert len(partners.notices(conn, world.partner_id("B"), "test")) == 1


def test_cli_disclosure_and_notices(
    cli_env: dict[str, str], world: World, tmp_path: Path, master_key: bytes
) -> None:
    env = cli_env | {"VITALS_EXPORT_DIR": str(tmp_path / "out")}

    def vitals(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VITALS), *args], env=env, capture_output=True, text=True, timeout=120
        )

    done = vitals("flows", "run", "disclosure", "--partner", world.partner_id("A"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"disclosure_id", "path", "rows", "subjects"} <= set(result)
    assert result["rows"] == sum(world.disclosure("A").values())

    person = next(p for p in world.people if p.sid in {s for s, *_ in world.disclosure("A")})
    done = vitals("objection", "add", person.sid, "--purpose", "disclosure")
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"objection_id"}
    done = vitals("partner", "notices", world.partner_id("A"))
    assert done.returncode == 0, done.stderr
    [notice] = json.loads(done.stdout)
    assert notice["kind"] == "objection"
    assert notice["pseudonym"] == world.pseudonym("A", person.sid)
    assert person.sid not in done.stdout

    done = vitals("flows", "run", "disclosure", "--partner", world.partner_id("D"))
    assert done.returncode == 1 and "partner_purpose" in done.stderr
    assert vitals("flows", "run", "disclosure").returncode == 2
