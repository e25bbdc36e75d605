"""Marketing audiences against an oracle over the same world: members, partner
pseudonyms (stable for a partner, different between partners), region and
objection rules, the disclosure log, notices, the manifest, and the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import InputError
from flows.audience import run_audience
from store import objections, partners
from tests.flows.purposes_world import GROUP, OTHER_GROUP, World, build_world, needles, scan_output

VITALS = Path(sys.executable).with_name("vitals")


@pytest.fixture
def world(conn: psycopg.Connection, master_key: bytes) -> World:
    return build_world(conn, master_key)


def members(result: dict[str, object]) -> list[str]:
    table = pq.read_table(Path(str(result["path"])) / "members.parquet")
    assert table.schema.equals(pa.schema([pa.field("member", pa.string(), nullable=False)]))
    return table.column("member").to_pylist()


def check_manifest(path: Path, rows: int) -> dict[str, object]:
    manifest = json.loads((path / "_manifest.json").read_text())
    [entry] = manifest["files"]
    data = (path / entry["path"]).read_bytes()
    assert entry["path"] == "members.parquet" and entry["rows"] == rows
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert manifest["rows"] == {"members": rows}
    assert abs(datetime.fromisoformat(manifest["cutoff"]) - datetime.now(UTC)) < timedelta(
        minutes=5
    )
    assert any("marketing consent" in rule for rule in manifest["rules"])
    assert (path / "_manifest.json").stat().st_mode & 0o777 == 0o600
    assert (path / "members.parquet").stat().st_mode & 0o777 == 0o600
    assert path.stat().st_mode & 0o777 == 0o700
    return manifest


def test_own_audience_is_the_oracle_by_subject_id(
    db_url: str, world: World, master_key: bytes, export_dir: Path, conn: psycopg.Connection
) -> None:
    for group in (GROUP, OTHER_GROUP):
        expected = world.audience(group)
        result = run_audience(db_url, master_key, export_dir, group, actor="test")
        assert set(result) == {"audience_id", "members", "path"}
        got = members(result)
        assert len(got) == len(set(got)) == result["members"]
        assert set(got) == expected and got == sorted(got)
        path = Path(str(result["path"]))
        assert path.parent == (export_dir / "audiences").resolve()
        manifest = check_manifest(path, len(expected))
        assert manifest["partner_id"] is None and manifest["group"] == group
    # sanity of the world: every rule left someone out
    assert 0 < len(world.audience(GROUP)) < sum(GROUP in p.groups for p in world.people)
    # own marketing is no disclosure: nothing logged, nothing in the extract
    assert conn.execute("SELECT count(*) FROM partner_disclosures").fetchone() == (0,)
    audited = conn.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'audience.create' AND actor = 'test'"
    ).fetchone()
    assert audited == (2,)


def test_partner_audiences_use_stable_partner_pseudonyms(
    db_url: str, world: World, master_key: bytes, export_dir: Path, conn: psycopg.Connection
) -> None:
    seen: dict[str, set[str]] = {}
    for partner in ("A", "B", "D"):
        expected = world.audience(GROUP, partner)
        first = run_audience(db_url, master_key, export_dir, GROUP, world.partner_id(partner))
        again = run_audience(db_url, master_key, export_dir, GROUP, world.partner_id(partner))
        got = members(first)
        assert got == sorted(got)
        assert set(got) == {world.pseudonym(partner, sid) for sid in expected}
        assert members(again) == got  # stable for the partner
        manifest = check_manifest(Path(str(first["path"])), len(expected))
        assert manifest["partner_id"] == world.partner_id(partner)
        assert any("disclosure objection" in rule for rule in manifest["rules"])
        scan_output(Path(str(first["path"])), needles(world))
        seen[partner] = set(got)
    # region: FI residents go only to FI partners (B, D), not to A
    fi = {p.sid for p in world.people if p.residency == "FI"}
    assert not fi & world.audience(GROUP, "A") and fi & world.audience(GROUP, "B")
    # different partners, different names for the same people
    assert not seen["A"] & seen["B"] and not seen["B"] & seen["D"]
    # a disclosure objection for A keeps someone out of A's audience only
    only_a = [
        p.sid
        for p in world.people
        if p.objects("disclosure", world.partner_id("A"))
        and not p.objects("disclosure", world.partner_id("B"))
        and p.sid in world.audience(GROUP, "B")
    ]
    assert only_a and all(world.pseudonym("A", sid) not in seen["A"] for sid in only_a)
    # every member of a partner's audience is logged as disclosed to it
    logged = conn.execute(
        "SELECT partner_id::text, subject_id::text, kind, what, rows FROM partner_disclosures"
    ).fetchall()
    assert len(logged) == 2 * sum(len(world.audience(GROUP, p)) for p in ("A", "B", "D"))
    assert {(p, s) for p, s, *_ in logged} == {
        (world.partner_id(p), sid) for p in ("A", "B", "D") for sid in world.audience(GROUP, p)
    }
    assert {(k, json.dumps(w), n) for _, _, k, w, n in logged} == {
        ("audience", json.dumps({"group": GROUP}), 1)
    }


def test_refusals(db_url: str, world: World, master_key: bytes, export_dir: Path) -> None:
    with pytest.raises(InputError) as refused:
        run_audience(db_url, master_key, export_dir, GROUP, world.partner_id("C"))
    assert refused.value.code == "partner_purpose"
    with pytest.raises(InputError) as refused:
        run_audience(db_url, master_key, export_dir, "no_such_group")
    assert refused.value.code == "unknown_group"
    with pytest.raises(InputError) as refused:
        run_audience(db_url, master_key, export_dir, GROUP, "00000000-0000-0000-0000-000000000000")
    assert refused.value.code == "not_found"
    assert not (export_dir / "audiences").exists() or not any((export_dir / "audiences").iterdir())


def test_objection_and_its_lift_reach_the_next_run(
    db_url: str, world: World, master_key: bytes, export_dir: Path, conn: psycopg.Connection
) -> None:
    person = next(p for p in world.people if p.sid in world.audience(GROUP, "A"))
    pseudonym_a = world.pseudonym("A", person.sid)
    assert pseudonym_a in members(
        run_audience(db_url, master_key, export_dir, GROUP, world.partner_id("A"))
    )
    assert not partners.notices(conn, world.partner_id("A"), "test")

    oid = objections.add_objection(conn, master_key, person.sid, "marketing", "test")
    conn.commit()
    # the partner that received them is owed a notice, naming them as it knows them
    [notice] = partners.notices(conn, world.partner_id("A"), "test")
    assert (notice["kind"], notice["purpose"], notice["pseudonym"]) == (
        "objection",
        "marketing",
        pseudonym_a,
    )
    assert not partners.notices(conn, world.partner_id("B"), "test")
    conn.commit()
    assert person.sid not in members(run_audience(db_url, master_key, export_dir, GROUP))
    assert pseudonym_a not in members(
        run_audience(db_url, master_key, export_dir, GROUP, world.partner_id("A"))
    )

    objections.lift_objection(conn, oid["objection_id"], "test")
    conn.commit()
    assert person.sid in members(run_audience(db_url, master_key, export_dir, GROUP))


def test_objection_racing_an_audience_still_owes_a_notice(
    db_url: str,
    world: World,
    master_key: bytes,
    export_dir: Path,
    conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An objection committed after the run's snapshot but before its commit:
    the person goes out, and the partner is told at once."""
    import flows.audience

    person = next(p for p in world.people if p.sid in world.audience(GROUP, "D"))
    real = flows.audience.queries.record_audience

    def record_then_object(c: psycopg.Connection, **kwargs: object) -> None:
        real(c, **kwargs)  # type: ignore[arg-type]
        with psycopg.connect(db_url) as other:
            objections.add_objection(other, master_key, person.sid, "marketing", "test")
            other.commit()

    monkeypatch.setattr(flows.audience.queries, "record_audience", record_then_object)
    result = run_audience(db_url, master_key, export_dir, GROUP, world.partner_id("D"))
    assert world.pseudonym("D", person.sid) in members(result)
    [notice] = partners.notices(conn, world.partner_id("D"), "test")
    assert notice["pseudonym"] == world.pseudonym("D", person.sid)


def test_cli_prints_the_contract_shape(
    cli_env: dict[str, str], world: World, tmp_path: Path
) -> None:
    env = cli_env | {"VITALS_EXPORT_DIR": str(tmp_path / "out")}

    def vitals(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VITALS), *args], env=env, capture_output=True, text=True, timeout=120
        )

    done = vitals("flows", "run", "audience", "--group", GROUP, "--partner", world.partner_id("A"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"audience_id", "members", "path"}
    assert result["members"] == len(world.audience(GROUP, "A"))
    assert Path(result["path"]) == (tmp_path / "out" / "audiences" / result["audience_id"])

    done = vitals("flows", "run", "audience", "--group", GROUP, "--partner", world.partner_id("C"))
    assert done.returncode == 1 and "partner_purpose" in done.stderr and done.stdout == ""
    done = vitals("flows", "run", "audience")
    assert done.returncode == 2
