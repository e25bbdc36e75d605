"""Analytic user groups: a versioned rule set (data) evaluated in SQL.

`derive_groups` is the plain function doing the work in one transaction
(its SQL in `store.groups`):
subjects with an unwithdrawn `analytics` consent -> windowed aggregates per
subject -> every rule of the set (`flows/rules_v1.json`, passed to SQL as
jsonb and evaluated by `vitals_rule_holds`) -> memberships. A membership that
no longer holds ends (`valid_until`, `end_reason`); it is never overwritten.
A subject whose analytics consent is withdrawn has every membership ended at
the next run and gets no new ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import common
from store import groups as queries
from store.db import connect, translate_errors
from store.registry import audit

RULES_PATH = Path(__file__).with_name("rules_v1.json")

# Metrics the SQL computes per subject (sql/queries/groups.sql, groups_metrics).
METRICS = frozenset(
    {
        "bp_n",
        "systolic_mean",
        "diastolic_mean",
        "hr_n",
        "hr_median",
        "spo2_n",
        "spo2_median",
        "glucose_n",
        "glucose_median",
        "weight_n",
        "weight_trend_kg",
        "step_days",
        "steps_per_day",
        "readings_n",
        "active_days",
        "active_day_ratio",
        "recent_active_days",
        "prior_readings_n",
        "prior_active_day_ratio",
    }
)
OPS = frozenset({"<", "<=", ">", ">=", "="})

# The reading types each evidence metric is computed from (sql/queries/groups.sql).
# An export shows a membership only to the extent the research consent covers
# every type of its evidence. None: computed from readings of every type the
# analytics consent allowed (engagement), so only a research consent for every
# type covers it. The window bounds and the threshold carry no health data; a
# key in neither map counts as every type.
EVIDENCE_TYPES: dict[str, list[str] | None] = {
    "bp_n": ["blood-pressure"],
    "systolic_mean": ["blood-pressure"],
    "diastolic_mean": ["blood-pressure"],
    "hr_n": ["heart-rate"],
    "hr_median": ["heart-rate"],
    "spo2_n": ["oxygen-saturation"],
    "spo2_median": ["oxygen-saturation"],
    "glucose_n": ["blood-glucose"],
    "glucose_median": ["blood-glucose"],
    "weight_n": ["body-weight"],
    "weight_trend_kg": ["body-weight"],
    "step_days": ["step-count"],
    "steps_per_day": ["step-count"],
    "readings_n": None,
    "active_days": None,
    "active_day_ratio": None,
    "recent_active_days": None,
    "prior_readings_n": None,
    "prior_active_day_ratio": None,
}
EVIDENCE_WITHOUT_TYPES = ("window_from", "window_until", "min_readings")
assert set(EVIDENCE_TYPES) == METRICS


class RuleError(ValueError):
    """The rule set is malformed; the message names the rule and the problem."""


def _condition_metrics(cond: Any, where: str) -> list[str]:
    if not isinstance(cond, dict):
        raise RuleError(f"{where}: a condition must be an object")
    for combinator in ("all", "any"):
        if combinator in cond:
            parts = cond[combinator]
            if not isinstance(parts, list) or not parts:
                raise RuleError(f"{where}: {combinator!r} needs a non-empty list")
            return [m for p in parts for m in _condition_metrics(p, where)]
    metric, op, value = cond.get("metric"), cond.get("op"), cond.get("value")
    if metric not in METRICS:
        raise RuleError(f"{where}: unknown metric {metric!r}")
    if op not in OPS:
        raise RuleError(f"{where}: unknown operator {op!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(f"{where}: value must be a number")
    return [metric]


@dataclass(frozen=True)
class RuleSet:
    version: str
    window_days: int
    lapse_days: int
    rules: tuple[dict[str, Any], ...]

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(r["group"] for r in self.rules)


def parse_rules(doc: dict[str, Any]) -> RuleSet:
    """Validate a rule-set document; each rule gets its evidence metric list."""
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        raise RuleError("the rule set needs a version string")
    window_days, lapse_days = doc.get("window_days"), doc.get("lapse_days")
    for name, days in (("window_days", window_days), ("lapse_days", lapse_days)):
        if not isinstance(days, int) or isinstance(days, bool) or days <= 0:
            raise RuleError(f"{name} must be a positive number of days")
    rules: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, rule in enumerate(doc.get("rules") or []):
        group = rule.get("group")
        where = f"rule {i} ({group})"
        if not isinstance(group, str) or not group or group in seen:
            raise RuleError(f"{where}: group must be a unique name")
        seen.add(group)
        if rule.get("count") not in METRICS:
            raise RuleError(f"{where}: unknown count metric {rule.get('count')!r}")
        min_readings = rule.get("min_readings")
        if not isinstance(min_readings, int) or isinstance(min_readings, bool) or min_readings < 1:
            raise RuleError(f"{where}: min_readings must be a positive integer")
        used = _condition_metrics(rule.get("when"), where)
        evidence = list(dict.fromkeys([rule["count"], *used]))
        rules.append({**rule, "evidence": evidence})
    if not rules:
        raise RuleError("the rule set has no rules")
    return RuleSet(version, int(window_days), int(lapse_days), tuple(rules))  # type: ignore[arg-type]


def load_rules(path: Path = RULES_PATH) -> RuleSet:
    return parse_rules(json.loads(path.read_text()))


def window_end(as_of: datetime) -> datetime:
    """Windows are whole UTC days before the run's day."""
    as_of = as_of.astimezone(UTC)
    return as_of.replace(hour=0, minute=0, second=0, microsecond=0)


def derive_groups(
    database_url: str,
    rules: RuleSet | None = None,
    as_of: datetime | None = None,
    actor: str = "flows.groups",
) -> dict[str, Any]:
    """Evaluate the rule set for every eligible subject and update memberships.

    One transaction on its own connection, serialised by an advisory lock.
    Returns what changed.
    """
    rules = rules or load_rules()
    as_of = as_of or datetime.now(UTC)
    if as_of.tzinfo is None:
        raise ValueError("as_of needs a time zone")
    end = window_end(as_of)
    start = end - timedelta(days=rules.window_days)
    with translate_errors(), connect(database_url) as conn, conn.transaction():
        changes = queries.update_memberships(
            conn,
            as_of=as_of,
            version=rules.version,
            window_end=end,
            window_days=rules.window_days,
            lapse_days=rules.lapse_days,
            rules=list(rules.rules),
            window={"window_from": start.isoformat(), "window_until": end.isoformat()},
        )
        result: dict[str, Any] = {
            "rule_version": rules.version,
            "as_of": as_of.isoformat(),
            "window_from": start.isoformat(),
            "window_until": end.isoformat(),
            "subjects": changes.subjects,
            "started": changes.started,
            "ended": dict(sorted(changes.ended.items())),
            "open": changes.open,
        }
        audit(conn, actor, "groups.derive", **result)
    return result


# Prefect ----------------------------------------------------------------------


@task(
    name="derive-groups",
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=common.transient_failure,
    cache_policy=NO_CACHE,
)
def derive_groups_task(actor: str) -> dict[str, Any]:
    from core.settings import Settings

    return derive_groups(Settings().require_database_url(), actor=actor)


@flow(name="vitals-groups", description="Derive analytic user groups (rule set v1).")
def groups_flow(actor: str = "prefect") -> dict[str, Any]:
    result = derive_groups_task(actor)
    get_run_logger().info(
        "groups %s: %s subjects, %s started, ended %s, %s open",
        result["rule_version"],
        result["subjects"],
        result["started"],
        result["ended"],
        result["open"],
    )
    return result
