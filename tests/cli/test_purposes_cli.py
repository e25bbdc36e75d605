"""`vitals partner …`, `vitals objection …` and marketing consents as an
operator runs them: JSON shapes on stdout, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

VITALS = Path(sys.executable).with_name("vitals")


def test_partners_objections_and_marketing_consents(cli_env: dict[str, str]) -> None:
    def vitals(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VITALS), *args], env=cli_env, capture_output=True, text=True, timeout=120
        )

    def ok(*args: str) -> Any:
        done = vitals(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert ok("db", "migrate") == {"applied": []}
    partner = ok(
        "partner",
        "add",
        "Acme",
        "--region",
        "FI",
        "--purposes",
        "marketing,disclosure",
        "--types",
        "heart-rate,blood-pressure",
    )
    assert set(partner) == {"partner_id"}
    other = ok("partner", "add", "Beta", "--region", "EU", "--purposes", "marketing")
    listed = ok("partner", "list")
    assert isinstance(listed, list)
    assert [
        (p["partner_id"], p["name"], p["region"], p["purposes"], p["types"]) for p in listed
    ] == [
        (
            partner["partner_id"],
            "Acme",
            "FI",
            ["marketing", "disclosure"],
            ["heart-rate", "blood-pressure"],
        ),
        (other["partner_id"], "Beta", "EU", ["marketing"], None),
    ]
    assert ok("partner", "notices", partner["partner_id"]) == []

    sid = ok("subject", "add", "--residency", "EU")["subject_id"]
    consent = ok("consent", "grant", sid, "--purpose", "marketing")
    assert set(consent) == {"consent_id"}
    objection = ok(
        "objection", "add", sid, "--purpose", "disclosure", "--partner", partner["partner_id"]
    )
    assert set(objection) == {"objection_id"}
    assert set(ok("objection", "add", sid, "--purpose", "research")) == {"objection_id"}
    lifted = ok("objection", "lift", objection["objection_id"])
    assert lifted["objection_id"] == objection["objection_id"]

    # refused input: exit 1 with the reason code on stderr, nothing on stdout
    for args, code in (
        (("partner", "add", "Acme", "--region", "EU", "--purposes", "marketing"), "duplicate"),
        (("partner", "add", "X", "--region", "EU", "--purposes", "research"), "invalid_purpose"),
        (
            ("objection", "add", sid, "--purpose", "research", "--partner", partner["partner_id"]),
            "invalid_partner",
        ),
        (("objection", "add", str(uuid.uuid4()), "--purpose", "research"), "not_found"),
        (("objection", "lift", str(uuid.uuid4())), "not_found"),
        (("partner", "notices", str(uuid.uuid4())), "not_found"),
    ):
        done = vitals(*args)
        assert (done.returncode, done.stdout) == (1, ""), done
        assert code in done.stderr
    # usage errors: exit 2
    assert vitals("objection", "add", sid, "--purpose", "analytics").returncode == 2
    assert vitals("partner", "add", "Y", "--region", "US", "--purposes", "x").returncode == 2
    assert vitals("partner", "add", "Y", "--region", "EU").returncode == 2
