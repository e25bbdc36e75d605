"""The analytic-groups queries: rule evaluation and membership changes in SQL.

The rule set (parsing, validation, evidence types) and the run's report live
in `flows.groups`; the SQL it runs is here (`sql/queries/groups.sql`).

One transaction convention: every function takes a connection and runs in
its caller's transaction, never committing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from store.db import q


@dataclass(frozen=True)
class MembershipChanges:
    subjects: int  # subjects with an unwithdrawn analytics consent
    started: int
    ended: Counter[str]  # end_reason -> memberships ended
    open: int  # memberships open after the run


def update_memberships(
    conn: psycopg.Connection,
    *,
    as_of: datetime,
    version: str,
    window_end: datetime,
    window_days: int,
    lapse_days: int,
    rules: list[dict[str, Any]],
    window: dict[str, Any],
) -> MembershipChanges:
    """Evaluate `rules` (version `version`) for every subject with an unwithdrawn
    analytics consent over the window ending at `window_end`; end memberships
    that no longer hold and start new ones as of `as_of`.

    Runs in the caller's transaction (never commits), serialised with other
    runs by a transaction-level advisory lock. `window` is merged into every
    membership's evidence.
    """
    params: dict[str, Any] = {
        "as_of": as_of,
        "version": version,
        "window_end": window_end,
        "window_days": window_days,
        "lapse_days": lapse_days,
        "rules": Jsonb(rules),
        "window": Jsonb(window),
    }
    conn.execute(q("groups_lock"))
    conn.execute(q("groups_create_temp"))
    conn.execute(q("groups_eligible"), params)
    conn.execute(q("groups_metrics"), params)
    conn.execute(q("groups_matches"), params)
    ended = Counter(r[0] for r in conn.execute(q("groups_end_ineligible"), params).fetchall())
    ended.update(r[0] for r in conn.execute(q("groups_end_unmatched"), params).fetchall())
    started = conn.execute(q("groups_start"), params).rowcount
    subjects, open_ = conn.execute(q("groups_summary")).fetchone()  # type: ignore[misc]
    return MembershipChanges(subjects=subjects, started=started, ended=ended, open=open_)
