"""The statistics queries: eligible subjects and their groups, the cells
(exact, or each person's bounded contribution for differential privacy),
the record of a run and the privacy-budget ledger.

The steps (suppression, the DP mechanism, Parquet, manifest) live in
`flows.statistics` and `flows.privacy`; the SQL is in
`sql/queries/statistics.sql`.

One transaction convention: `snapshot` and `spend_budget` own their
connection and transaction; every other function takes a connection and runs
in its caller's transaction, never committing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core.errors import InputError
from store.db import q, translate_errors


@contextlib.contextmanager
def snapshot(database_url: str) -> Iterator[tuple[psycopg.Connection, datetime]]:
    """Owns its connection: yields (connection, cut-off) inside one REPEATABLE
    READ transaction whose start is the cut-off, committed when the block
    succeeds. Statistics are not personal data, so no erasure lock is held."""
    with translate_errors(), psycopg.connect(database_url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            conn.execute(q("statistics_work_mem"))
            cutoff: datetime = conn.execute(q("statistics_cutoff")).fetchone()[0]  # type: ignore[index]
            conn.execute(q("statistics_create_temp"))
            yield conn, cutoff.astimezone(UTC)


def select_subjects(conn: psycopg.Connection, cutoff: datetime, region: str) -> int:
    """Keep the eligible subjects (and their groups) for this run; returns how many."""
    conn.execute(q("statistics_consents"), {"cutoff": cutoff, "region": region})
    return conn.execute(q("statistics_subjects"), {"cutoff": cutoff}).rowcount


def subject_groups(conn: psycopg.Connection) -> Iterator[tuple[int, list[str | None]]]:
    """(subject number, groups with None first) of every eligible subject, in
    batches through a server-side cursor."""
    with conn.cursor(name="stat_subject_groups") as cur:
        cur.itersize = 10_000
        cur.execute(q("statistics_subject_groups"))
        yield from cur


@contextlib.contextmanager
def values_csv(
    conn: psycopg.Connection, cutoff: datetime, period: str, series: Sequence[str]
) -> Iterator[Iterator[Any]]:
    """The readings of the run as CSV chunks of a COPY ... TO STDOUT: series
    index, period day, subject number, value; unordered. Read them before the
    block ends."""
    params = {"cutoff": cutoff, "period": period, "series": list(series)}
    with conn.cursor() as cur, cur.copy(q("statistics_values"), params) as copy:
        yield iter(copy)


def bounded_contributions(
    conn: psycopg.Connection,
    cutoff: datetime,
    period: str,
    *,
    bounds: Mapping[str, tuple[float, float]],
    max_cells: int,
    max_readings: int,
    salt: str,
) -> list[dict[str, Any]]:
    """Every cell's subjects, reading count and scaled sum, with each person's
    contribution bounded (see `statistics_contributions`)."""
    params = {
        "cutoff": cutoff,
        "period": period,
        "bounds": Jsonb({k: list(v) for k, v in bounds.items()}),
        "max_cells": max_cells,
        "max_readings": max_readings,
        "salt": salt,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q("statistics_contributions"), params).fetchall()


def record_run(conn: psycopg.Connection, **run: Any) -> None:
    """Record a run: statistics_id, region, period, min_subjects, epsilon,
    cutoff, path, cells, suppressed_cells, actor."""
    conn.execute(q("statistics_insert"), run)


def budget_spent(conn: psycopg.Connection, dataset: str) -> dict[str, Any]:
    """Epsilon and delta spent on `dataset` so far, and by how many releases."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("privacy_ledger_spent"), {"dataset": dataset}).fetchone()
    assert row is not None
    return {"epsilon": float(row["epsilon"]), "delta": float(row["delta"]), "runs": row["runs"]}


def spend_budget(
    database_url: str,
    *,
    dataset: str,
    release_id: str,
    epsilon: float,
    delta: float,
    mechanism: str,
    actor: str,
    budget: float | None = None,
) -> dict[str, Any]:
    """Owns its transaction: record the spend before the release is computed
    (a failed run keeps it: spent budget is never given back), refusing
    (`privacy_budget_exhausted`) when `budget` would be exceeded. Serialised
    per dataset. Returns the totals after this spend."""
    params = {
        "dataset": dataset,
        "release_id": release_id,
        "epsilon": epsilon,
        "delta": delta,
        "mechanism": mechanism,
        "actor": actor,
    }
    with translate_errors(), psycopg.connect(database_url) as conn:
        conn.execute(q("privacy_ledger_lock"), params)
        spent = budget_spent(conn, dataset)
        if budget is not None and spent["epsilon"] + epsilon > budget + 1e-12:
            raise InputError(
                "privacy_budget_exhausted",
                f"{dataset}: {spent['epsilon']:g} of epsilon {budget:g} spent; "
                f"{epsilon:g} more is not available",
            )
        conn.execute(q("privacy_ledger_insert"), params)
        after = budget_spent(conn, dataset)
        conn.commit()
    return after
