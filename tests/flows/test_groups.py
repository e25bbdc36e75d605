"""Group derivation on real PostgreSQL with readings whose groups are computed by hand.

Run time 2026-03-01T12:00Z: the window is the 30 whole UTC days before
2026-03-01 (day(1) .. day(30)); lapse looks at day(1..14) (recent) and
day(15..44) (prior).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from flows.groups import RULES_PATH, RuleError, derive_groups, load_rules, parse_rules
from store import registry as store_registry
from tests.flows.helpers import Registry, Subject

AS_OF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
END = datetime(2026, 3, 1, tzinfo=UTC)


def day(n: int, hour: int = 10) -> datetime:
    """n whole days before the run's day, at `hour` UTC (n=0 is the run's own day)."""
    return END - timedelta(days=n) + timedelta(hours=hour)


def open_groups(conn: psycopg.Connection) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for sid, key in conn.execute(
        "SELECT subject_id::text, group_key FROM group_memberships WHERE valid_until IS NULL"
    ):
        found.setdefault(sid, set()).add(key)
    return found


def memberships(conn: psycopg.Connection, s: Subject) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        "SELECT group_key, rule_version, evidence, valid_from, valid_until, end_reason"
        " FROM group_memberships WHERE subject_id = %s ORDER BY membership_id",
        (s.subject_id,),
    ).fetchall()


@pytest.fixture
def population(registry: Registry) -> dict[str, Subject]:
    r = registry
    s: dict[str, Subject] = {}

    def bp(name: str, pairs: list[tuple[float, float]], start: int = 1) -> None:
        r.readings(s[name], "blood-pressure", [(day(start + i), p) for i, p in enumerate(pairs)])

    def hr(name: str, days: range, value: float | list[float]) -> None:
        vals = value if isinstance(value, list) else [value] * len(days)
        r.readings(s[name], "heart-rate", [(day(n), v) for n, v in zip(days, vals, strict=True)])

    for name in (
        "bp_elevated",
        "bp_stage1",
        "bp_too_few",
        "bp_stage2",
        "bp_normal",
        "hr_low",
        "hr_low_few",
        "spo2_low",
        "glucose_high",
        "steps_active",
        "steps_sedentary",
        "steps_few",
        "weight_gain",
        "weight_flat",
        "regular",
        "lapsed",
        "irregular",
    ):
        s[name] = r.subject()
    s["no_analytics"] = r.subject(purposes=("collection", "research"))
    s["types_limited"] = r.subject(types=["heart-rate"])
    s["future_consent"] = r.subject(valid_from=AS_OF + timedelta(days=1))

    # Blood pressure: 30-day means against 2017 ACC/AHA.
    bp("bp_elevated", [(124, 74), (125, 75), (126, 76)])  # 125/75: elevated
    hr("bp_elevated", range(1, 11), [105.0 + i for i in range(10)])  # median 109.5: high
    bp("bp_stage1", [(128, 70), (132, 72), (136, 74)])  # 132/72: stage 1 (systolic)
    bp("bp_too_few", [(150, 95), (152, 96)])  # two readings: below the minimum of 3
    bp("bp_stage2", [(118, 90), (118, 92), (118, 94)])  # 118/92: stage 2 (diastolic)
    bp("bp_normal", [(110, 70), (112, 70), (114, 70)])  # 112/70: normal ...
    bp("bp_normal", [(180, 110)], start=40)  # ... outside the window
    bp("bp_normal", [(190, 120)], start=0)  # ... the run's own day: not a whole day yet
    r.readings(s["bp_normal"], "blood-pressure", [(day(2, 11), (200, 120))], erroneous=True)
    bp("no_analytics", [(170, 100)] * 3)
    bp("future_consent", [(170, 100)] * 3)
    bp("types_limited", [(170, 100)] * 3)  # no analytics consent for blood pressure
    hr("types_limited", range(1, 11), 110.0)

    hr("hr_low", range(1, 11), 45.0)
    hr("hr_low_few", range(1, 10), 45.0)  # nine readings: below the minimum of 10
    r.readings(
        s["spo2_low"],
        "oxygen-saturation",
        [(day(n), v) for n, v in zip(range(1, 6), [88, 89, 90, 95, 96], strict=True)],
    )
    r.readings(
        s["glucose_high"],
        "blood-glucose",
        [(day(n), v) for n, v in zip(range(1, 6), [120, 126, 130, 140, 150], strict=True)],
    )

    # Steps: daily totals, at least 7 days.
    r.readings(
        s["steps_active"], "step-count", [(day(n, h), 6000) for n in range(1, 11) for h in (8, 16)]
    )  # 12,000/day
    r.readings(s["steps_sedentary"], "step-count", [(day(n), 3000) for n in range(1, 9)])
    r.readings(s["steps_few"], "step-count", [(day(n), 20000) for n in range(1, 7)])

    # Weight: regression slope over the window x 30 days.
    r.readings(
        s["weight_gain"],
        "body-weight",
        [(day(n), v) for n, v in zip((29, 22, 15, 8, 1), (80, 80.5, 81, 81.5, 82), strict=True)],
    )  # +2.14 kg / 30 days
    r.readings(
        s["weight_flat"],
        "body-weight",
        [
            (day(n), v)
            for n, v in zip((29, 22, 15, 8, 1), (80, 80.2, 80.4, 80.6, 80.8), strict=True)
        ],
    )  # +0.86 kg

    # Engagement: days with any reading.
    hr("regular", range(1, 26), 70.0)  # 25 of 30 days
    hr("lapsed", range(15, 43), 70.0)  # 28 of the 30 prior days, none in the last 14
    hr("irregular", range(1, 21), 70.0)  # 20 of 30 days
    return s


EXPECTED = {
    "bp_elevated": {"blood_pressure_elevated", "heart_rate_high"},
    "bp_stage1": {"blood_pressure_stage_1"},
    "bp_stage2": {"blood_pressure_stage_2"},
    "bp_normal": {"blood_pressure_normal"},
    "types_limited": {"heart_rate_high"},
    "hr_low": {"heart_rate_low"},
    "spo2_low": {"spo2_low"},
    "glucose_high": {"glucose_high"},
    "steps_active": {"activity_active"},
    "steps_sedentary": {"activity_sedentary"},
    "weight_gain": {"weight_gain"},
    "regular": {"engagement_regular"},
    "lapsed": {"engagement_lapsed"},
}


def test_groups_match_hand_computed_expectations(
    conn: psycopg.Connection, db_url: str, population: dict[str, Subject]
) -> None:
    result = derive_groups(db_url, as_of=AS_OF)

    by_id = {s.subject_id: name for name, s in population.items()}
    got = {by_id[sid]: keys for sid, keys in open_groups(conn).items()}
    assert got == EXPECTED
    assert result["started"] == sum(len(v) for v in EXPECTED.values())
    assert result["subjects"] == len(population) - 2  # no analytics / consent not yet valid
    assert result["window_from"] == "2026-01-30T00:00:00+00:00"

    elevated = memberships(conn, population["bp_elevated"])
    ev = next(m for m in elevated if m["group_key"] == "blood_pressure_elevated")
    assert ev["rule_version"] == "v1"
    assert ev["valid_from"] == AS_OF and ev["valid_until"] is None
    assert ev["evidence"]["bp_n"] == 3
    assert ev["evidence"]["systolic_mean"] == 125
    assert ev["evidence"]["diastolic_mean"] == 75
    assert ev["evidence"]["window_until"] == "2026-03-01T00:00:00+00:00"
    hr_high = next(m for m in elevated if m["group_key"] == "heart_rate_high")
    assert hr_high["evidence"]["hr_median"] == 109.5
    [weight] = memberships(conn, population["weight_gain"])
    assert weight["evidence"]["weight_trend_kg"] == pytest.approx(2.14)
    [steps] = memberships(conn, population["steps_active"])
    assert steps["evidence"]["steps_per_day"] == 12000
    assert steps["evidence"]["step_days"] == 10
    [lapsed] = memberships(conn, population["lapsed"])
    assert lapsed["evidence"]["prior_active_day_ratio"] == pytest.approx(28 / 30, abs=1e-4)
    assert lapsed["evidence"]["recent_active_days"] == 0

    audit = conn.execute("SELECT detail FROM audit_log WHERE action = 'groups.derive'").fetchall()
    assert len(audit) == 1 and audit[0][0]["started"] == result["started"]


def test_history_is_kept_and_reruns_change_nothing(
    conn: psycopg.Connection, db_url: str, registry: Registry, population: dict[str, Subject]
) -> None:
    first = derive_groups(db_url, as_of=AS_OF)
    again = derive_groups(db_url, as_of=AS_OF)
    assert again["started"] == 0 and again["ended"] == {}
    assert again["open"] == first["open"]

    # A day later a high reading moves the 30-day mean to 133.75/75: stage 1.
    s = population["bp_elevated"]
    registry.readings(s, "blood-pressure", [(day(0), (160, 75))])
    later = AS_OF + timedelta(days=1)
    derive_groups(db_url, as_of=later)
    rows = memberships(conn, s)
    old = next(m for m in rows if m["group_key"] == "blood_pressure_elevated")
    assert old["valid_until"] == later and old["end_reason"] == "criteria_not_met"
    assert old["evidence"]["systolic_mean"] == 125  # never overwritten
    new = next(m for m in rows if m["group_key"] == "blood_pressure_stage_1")
    assert new["valid_from"] == later and new["valid_until"] is None
    assert new["evidence"]["systolic_mean"] == 133.75
    assert new["evidence"]["bp_n"] == 4


def test_analytics_withdrawal_ends_memberships_for_good(
    conn: psycopg.Connection, db_url: str, population: dict[str, Subject]
) -> None:
    derive_groups(db_url, as_of=AS_OF)
    for name in ("hr_low", "regular"):
        store_registry.withdraw_consent(conn, population[name].consents["analytics"], "test")
    conn.commit()

    result = derive_groups(db_url, as_of=AS_OF + timedelta(hours=1))
    assert result["ended"] == {"analytics_consent_withdrawn": 2}
    for name in ("hr_low", "regular"):
        [m] = memberships(conn, population[name])
        assert m["valid_until"] == AS_OF + timedelta(hours=1)
        assert m["end_reason"] == "analytics_consent_withdrawn"

    total = conn.execute("SELECT count(*) FROM group_memberships").fetchone()
    result = derive_groups(db_url, as_of=AS_OF + timedelta(hours=2))
    assert result["started"] == 0 and result["ended"] == {}
    assert conn.execute("SELECT count(*) FROM group_memberships").fetchone() == total
    got = open_groups(conn)
    assert population["hr_low"].subject_id not in got
    assert population["regular"].subject_id not in got


def test_a_new_rule_version_supersedes_the_old_one(
    conn: psycopg.Connection, db_url: str, population: dict[str, Subject]
) -> None:
    derive_groups(db_url, as_of=AS_OF)
    doc = json.loads(RULES_PATH.read_text())
    doc["version"] = "v2"
    for rule in doc["rules"]:
        if rule["group"] == "heart_rate_high":
            rule["when"]["value"] = 109.5  # 109.5 is no longer "high"
    result = derive_groups(db_url, parse_rules(doc), as_of=AS_OF + timedelta(hours=1))

    assert result["ended"] == {"rule_version_changed": sum(len(v) for v in EXPECTED.values())}
    rows = memberships(conn, population["bp_elevated"])
    assert [(m["group_key"], m["rule_version"], m["valid_until"] is None) for m in rows] == [
        ("blood_pressure_elevated", "v1", False),
        ("heart_rate_high", "v1", False),
        ("blood_pressure_elevated", "v2", True),
    ]
    assert open_groups(conn)[population["types_limited"].subject_id] == {"heart_rate_high"}


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(json.loads(RULES_PATH.read_text()))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["version"], "", "version"),
        (["window_days"], 0, "window_days"),
        (["rules", 4, "when", "metric"], "resting_mood", "unknown metric"),
        (["rules", 4, "when", "op"], "~", "unknown operator"),
        (["rules", 4, "when", "value"], "100", "number"),
        (["rules", 4, "count"], "nothing", "count metric"),
        (["rules", 4, "min_readings"], 0, "min_readings"),
        (["rules", 4, "group"], "heart_rate_low", "unique"),
        (["rules", 0, "when"], {"any": []}, "non-empty"),
    ],
)
def test_malformed_rule_sets_are_refused(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rules(_broken(path, value))


def test_the_shipped_rule_set_is_v1() -> None:
    rules = load_rules()
    assert rules.version == "v1"
    assert set(rules.groups) == {
        "blood_pressure_normal",
        "blood_pressure_elevated",
        "blood_pressure_stage_1",
        "blood_pressure_stage_2",
        "heart_rate_high",
        "heart_rate_low",
        "spo2_low",
        "glucose_high",
        "activity_sedentary",
        "activity_active",
        "weight_gain",
        "engagement_regular",
        "engagement_lapsed",
    }
