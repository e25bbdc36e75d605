"""Statistics against an oracle over the same world: cells, suppression and
its count, regions, research consent and objections, groups, periods; the
differentially private release (manifest, nulls, ledger, budget, noise within
loose bounds); the file carries nothing identifying; the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import InputError
from flows.statistics import run_statistics
from tests.flows.helpers import UNITS
from tests.flows.purposes_world import World, build_world, needles, scan_output

VITALS = Path(sys.executable).with_name("vitals")

# The contract's columns, written out here rather than imported.
EXPECTED_SCHEMA = pa.schema(
    [
        pa.field("type", pa.string(), nullable=False),
        pa.field("component", pa.string(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
        pa.field("period_start", pa.date32(), nullable=False),
        pa.field("group", pa.string()),
        pa.field("subjects", pa.int64(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("mean", pa.float64()),
        pa.field("sd", pa.float64()),
        pa.field("p10", pa.float64()),
        pa.field("p50", pa.float64()),
        pa.field("p90", pa.float64()),
    ]
)


@pytest.fixture
def world(conn: psycopg.Connection, master_key: bytes) -> World:
    return build_world(conn, master_key)


def published(result: dict[str, Any]) -> tuple[dict[tuple[Any, ...], dict[str, Any]], dict]:
    path = Path(result["path"])
    table = pq.read_table(path / "statistics.parquet")
    assert table.schema.equals(EXPECTED_SCHEMA, check_metadata=False)
    manifest = json.loads((path / "_manifest.json").read_text())
    [entry] = manifest["files"]
    assert entry["path"] == "statistics.parquet" and entry["rows"] == table.num_rows
    cells = {}
    for row in table.to_pylist():
        key = (row["type"], row["component"], row["period_start"], row["group"])
        assert key not in cells
        assert row["unit"] == UNITS[row["component"]]
        cells[key] = row
    return cells, manifest


@pytest.mark.parametrize(("region", "period"), [("EU", "week"), ("FI", "day"), ("FI", "month")])
def test_cells_suppression_and_regions_match_the_oracle(
    db_url: str, world: World, export_dir: Path, region: str, period: str
) -> None:
    expected = world.statistics(region, period)
    result = run_statistics(db_url, export_dir, region, period=period, actor="test")
    cells, manifest = published(result)
    shown = {k: v for k, v in expected.items() if v["subjects"] >= 10}
    assert set(cells) == set(shown)
    assert result["suppressed_cells"] == manifest["suppressed_cells"] == len(expected) - len(shown)
    assert len(shown) > 0 and manifest["suppressed_cells"] > 0
    for key, want in shown.items():
        got = cells[key]
        assert (got["subjects"], got["n"]) == (want["subjects"], want["n"]), key
        for stat in ("mean", "sd", "p10", "p50", "p90"):
            assert got[stat] == pytest.approx(want[stat], rel=1e-9, abs=1e-9), (key, stat)
    assert manifest["differential_privacy"] is None and manifest["region"] == region
    assert {k[3] for k in expected} >= {None, "heart_rate_high", "activity_active"}
    assert {k[0] for k in cells} <= {"heart-rate", "blood-pressure", "step-count"}
    if period == "week":
        assert {k[2] for k in cells} == {date(2026, 1, 5), date(2026, 1, 12)}
    scan_output(Path(result["path"]), needles(world))


def test_min_subjects_is_the_threshold(db_url: str, world: World, export_dir: Path) -> None:
    expected = world.statistics("FI", "week")
    for k in (1, 15):
        cells, manifest = published(run_statistics(db_url, export_dir, "FI", min_subjects=k))
        assert set(cells) == {key for key, v in expected.items() if v["subjects"] >= k}
        assert manifest["min_subjects"] == k
    with pytest.raises(InputError) as refused:
        run_statistics(db_url, export_dir, "FI", min_subjects=0)
    assert refused.value.code == "invalid_min_subjects"


def test_near_exact_with_a_huge_epsilon(
    db_url: str, world: World, export_dir: Path, conn: psycopg.Connection
) -> None:
    expected = world.statistics("FI", "week")
    cells, manifest = published(run_statistics(db_url, export_dir, "FI", epsilon=1e6))
    assert set(cells) == {k for k, v in expected.items() if v["subjects"] >= 10}
    for key, got in cells.items():
        want = expected[key]
        assert (got["subjects"], got["n"]) == (want["subjects"], want["n"]), key
        lo, hi = manifest["differential_privacy"]["clamping_bounds"][key[1]]
        noise = manifest["differential_privacy"]["noise_scales"]["sum"]
        assert got["mean"] == pytest.approx(want["mean"], abs=(hi - lo) * 10 * noise / want["n"])
        assert (got["sd"], got["p10"], got["p50"], got["p90"]) == (None, None, None, None)
    dp = manifest["differential_privacy"]
    assert dp["epsilon"] == 1e6 and dp["delta"] > 0 and "OpenDP" in dp["mechanism"]
    assert dp["clamping_bounds"]["heart_rate"] == [20.0, 300.0]
    assert "latitude" not in dp["clamping_bounds"]
    assert dp["max_cells_per_subject"] > 0 and dp["max_readings_per_subject_and_cell"] > 0


def test_noise_within_loose_bounds_and_the_ledger(
    db_url: str, world: World, export_dir: Path, conn: psycopg.Connection
) -> None:
    expected = world.statistics("FI", "week")
    for run in range(2):
        result = run_statistics(
            db_url, export_dir, "FI", epsilon=200.0, max_cells=24, max_readings=7
        )
        assert result["epsilon"] == 200.0
        cells, manifest = published(result)
        dp = manifest["differential_privacy"]
        scales = dp["noise_scales"]
        assert dp["dataset"] == "statistics:FI"
        assert dp["dataset_spent_after"]["epsilon"] == pytest.approx(200.0 * (run + 1))
        assert cells, "a release with nothing in it says nothing about the noise"
        for key, got in cells.items():
            want = expected[key]
            lo, hi = dp["clamping_bounds"][key[1]]
            assert abs(got["subjects"] - want["subjects"]) <= 15 * scales["cells"] + 1
            assert abs(got["n"] - want["n"]) <= 15 * scales["n"] + 1
            slack = (hi - lo) / 2 * 15 * scales["sum"] / max(want["n"], 1) + 1
            assert abs(got["mean"] - want["mean"]) <= slack, key
            assert lo <= got["mean"] <= hi
            assert got["subjects"] >= dp["publication_threshold"]
            assert got["sd"] is None and got["p50"] is None
    ledger = conn.execute(
        "SELECT dataset, epsilon, delta, mechanism FROM privacy_ledger ORDER BY entry_id"
    ).fetchall()
    assert [(d, e) for d, e, *_ in ledger] == [("statistics:FI", 200.0)] * 2
    runs = conn.execute(
        "SELECT count(*), count(epsilon) FROM statistics_runs WHERE region = 'FI'"
    ).fetchone()
    assert runs == (2, 2)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM privacy_ledger")  # append-only
    conn.rollback()


def test_the_budget_caps_a_dataset(
    db_url: str, world: World, export_dir: Path, conn: psycopg.Connection
) -> None:
    run_statistics(db_url, export_dir, "EU", epsilon=4.0, epsilon_budget=6.0)
    with pytest.raises(InputError) as refused:
        run_statistics(db_url, export_dir, "EU", epsilon=4.0, epsilon_budget=6.0)
    assert refused.value.code == "privacy_budget_exhausted"
    run_statistics(db_url, export_dir, "FI", epsilon=4.0, epsilon_budget=6.0)  # its own dataset
    spent = conn.execute(
        "SELECT dataset, sum(epsilon) FROM privacy_ledger GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert spent == [("statistics:EU", 4.0), ("statistics:FI", 4.0)]
    with pytest.raises(InputError):
        run_statistics(db_url, export_dir, "EU", epsilon=-1.0)
    with pytest.raises(InputError):
        run_statistics(db_url, export_dir, "EU", epsilon=math.inf)


def test_research_objection_and_its_lift(
    db_url: str, world: World, export_dir: Path, conn: psycopg.Connection, master_key: bytes
) -> None:
    from store import objections

    cells, _ = published(run_statistics(db_url, export_dir, "FI", min_subjects=1))
    person = next(p for p in world.people if p.research and not p.objects("research"))
    oid = objections.add_objection(conn, master_key, person.sid, "research", "test")
    conn.commit()
    person.objections.append(("research", None))
    expected = world.statistics("FI", "week")
    after, _ = published(run_statistics(db_url, export_dir, "FI", min_subjects=1))
    assert set(after) == set(expected)
    assert sum(c["n"] for c in after.values()) < sum(c["n"] for c in cells.values())
    objections.lift_objection(conn, oid["objection_id"], "test")
    conn.commit()
    lifted, _ = published(run_statistics(db_url, export_dir, "FI", min_subjects=1))
    assert {k: v["n"] for k, v in lifted.items()} == {k: v["n"] for k, v in cells.items()}


def test_cli_statistics(cli_env: dict[str, str], world: World, tmp_path: Path) -> None:
    env = cli_env | {"VITALS_EXPORT_DIR": str(tmp_path / "out")}

    def vitals(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VITALS), *args], env=env, capture_output=True, text=True, timeout=120
        )

    done = vitals(
        "flows", "run", "statistics", "--region", "FI", "--min-subjects", "5", "--period", "month"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"statistics_id", "path", "cells", "suppressed_cells"} <= set(result)
    assert Path(result["path"]).parent == tmp_path / "out" / "statistics"
    assert (Path(result["path"]) / "statistics.parquet").exists()
    done = vitals("flows", "run", "statistics", "--epsilon", "2.5")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epsilon"] == 2.5
    done = vitals("flows", "run", "statistics", "--epsilon", "-1")
    assert done.returncode == 1 and "invalid_epsilon" in done.stderr
    assert vitals("flows", "run", "statistics", "--period", "year").returncode == 2
