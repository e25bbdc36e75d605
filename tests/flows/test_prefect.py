"""The flows through Prefect (one temporary Prefect server), their schedules, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from cli import main
from core.settings import Settings
from flows.export import export_flow
from flows.groups import groups_flow
from flows.retention import retention_flow
from flows.serve import deployments
from tests.flows.helpers import Registry, Subject
from tests.support.pg import TEST_SECRET_KEY

VITALS = Path(sys.executable).with_name("vitals")


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server (SQLite in a temp dir) for this module; its
    process ends with the module."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def heart_rate_high(registry: Registry) -> Subject:
    """A subject with analytics and research consent and ten readings of 110/min."""
    s = registry.subject(("collection", "analytics", "research"))
    today = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
    registry.readings(s, "heart-rate", [(today - timedelta(days=d), 110) for d in range(1, 11)])
    return s


def test_each_flow_runs_through_prefect(
    prefect_server: None,
    db_url: str,
    heart_rate_high: Subject,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VITALS_DATABASE_URL", db_url)
    monkeypatch.setenv("VITALS_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("VITALS_EXPORT_DIR", str(tmp_path))

    state = groups_flow(actor="test", return_state=True)
    assert state.is_completed()
    groups = state.result()
    assert groups["started"] == 1 and groups["open"] == 1

    state = export_flow(region="EU", actor="test", return_state=True)
    assert state.is_completed()
    export = state.result()
    assert export["rows"] == 10 and export["subjects"] == 1
    assert Path(export["path"]).parent == tmp_path.resolve()
    assert (Path(export["path"]) / "_manifest.json").exists()

    state = retention_flow(actor="test", return_state=True)
    assert state.is_completed()
    assert state.result()["readings"] == 0


def test_deployments_carry_the_cron_schedules_from_settings() -> None:
    settings = Settings(
        groups_cron="7 * * * *",
        export_cron="45 1 * * *",
        retention_cron="5 4 * * *",
        purge_cron="*/5 * * * *",
        statistics_cron="0 5 * * 2",
    )
    found = {
        d.name: ([s.schedule.cron for s in d.schedules], d.parameters)  # type: ignore[union-attr]
        for d in deployments(settings)
    }
    assert found == {
        "vitals-groups-hourly": (["7 * * * *"], {"actor": "prefect:schedule"}),
        "vitals-export-nightly": (["45 1 * * *"], {"region": "EU", "actor": "prefect:schedule"}),
        "vitals-retention-daily": (["5 4 * * *"], {"actor": "prefect:schedule"}),
        # The purge queue is worked off where the exports are (issue 2).
        "vitals-purge": (["*/5 * * * *"], {"actor": "prefect:schedule"}),
        # Statistics weekly; audiences and disclosures on demand, with parameters (issue 13).
        "vitals-statistics-weekly": (
            ["0 5 * * 2"],
            {"region": "EU", "period": "week", "actor": "prefect:schedule"},
        ),
        "vitals-audience": ([], {"actor": "prefect"}),
        "vitals-disclosure": ([], {"actor": "prefect"}),
    }


def test_cli_runs_each_flow_and_prints_json(
    cli_env: dict[str, str],
    heart_rate_high: Subject,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "PREFECT_API_URL"}
    env["VITALS_EXPORT_DIR"] = str(tmp_path / "out")
    for key, value in env.items():
        if key.startswith("VITALS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    def vitals(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = vitals("flows", "run", "groups")
    assert code == 0, err
    assert json.loads(out)["started"] == 1

    code, out, err = vitals("flows", "run", "export", "--region", "FI")
    assert code == 0, err
    assert json.loads(out)["region"] == "FI" and json.loads(out)["rows"] == 10

    code, out, err = vitals("flows", "run", "retention")
    assert code == 0, err
    assert json.loads(out)["readings"] == 0

    with pytest.raises(SystemExit) as usage:
        vitals("flows", "run", "export", "--region", "US")
    assert usage.value.code == 2

    monkeypatch.delenv("VITALS_DATABASE_URL")
    code, out, err = vitals("flows", "run", "groups")
    assert code == 2 and "VITALS_DATABASE_URL" in err and out == ""

    # The installed command, as an operator runs it: JSON on stdout, progress on stderr.
    done = subprocess.run(
        [str(VITALS), "flows", "run", "export"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"export_id", "path", "rows", "subjects"} <= set(result)
    assert result["rows"] == 10 and result["subjects"] == 1 and result["region"] == "EU"
    assert Path(result["path"]) == (tmp_path / "out" / result["export_id"]).resolve()
    assert "export EU" in done.stderr and "rows" in done.stderr  # the progress bar


def test_purpose_flows_run_through_prefect(
    prefect_server: None,
    db_url: str,
    conn: psycopg.Connection,
    master_key: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.audience import audience_flow
    from flows.disclosure import disclosure_flow
    from flows.statistics import statistics_flow
    from tests.flows.purposes_world import GROUP, build_world

    world = build_world(conn, master_key, n=12)
    monkeypatch.setenv("VITALS_DATABASE_URL", db_url)
    monkeypatch.setenv("VITALS_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("VITALS_EXPORT_DIR", str(tmp_path))

    state = audience_flow(group=GROUP, partner_id=world.partner_id("B"), return_state=True)
    assert state.is_completed()
    assert state.result()["members"] == len(world.audience(GROUP, "B"))

    state = disclosure_flow(partner_id=world.partner_id("A"), return_state=True)
    assert state.is_completed()
    assert state.result()["rows"] == sum(world.disclosure("A").values())

    state = statistics_flow(region="FI", min_subjects=2, epsilon=None, return_state=True)
    assert state.is_completed()
    assert state.result()["cells"] == sum(
        v["subjects"] >= 2 for v in world.statistics("FI", "week").values()
    )
