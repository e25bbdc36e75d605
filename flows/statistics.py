"""Research and statistics in non-identifiable form (CONTRACT.md v2, "Flows").

`$VITALS_EXPORT_DIR/statistics/<statistics_id>/statistics.parquet`, columns
type, component, unit, period_start (date), group (null = all subjects),
subjects, n, mean, sd, p10, p50, p90, and `_manifest.json` written last.

Only subjects with an unwithdrawn `research` consent covering the cut-off
and no unlifted `research` objection, and only the readings that consent
covers (types, provider); FI residents only in region FI. Groups are the
memberships open at the cut-off (still backed by an analytics consent). A
cell computed from fewer than `min_subjects` distinct subjects is not
published; the manifest counts those cells. SQL selects the subjects, their
groups and the readings (`store.statistics`), streamed once as four numbers
a reading; `flows.cells` computes distinct subjects, mean, sample sd and
exact continuous percentiles (as percentile_cont) in two passes over that
stream in bounded memory (pass 2 replays it from an unnamed temp file).

With `epsilon`, `n` and `mean` (and the subject counts) go through the
differentially private mechanism of `flows.privacy` (OpenDP), sd and
percentiles are null, the manifest records ε, δ, the mechanism and its
bounds, and the spend is recorded first in the privacy ledger for the
dataset `statistics:<region>` (refused when `VITALS_STATISTICS_EPSILON_BUDGET`
would be exceeded).
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.errors import InputError
from core.longformat import CopyStream
from core.outputs import OutputRoot, file_entry, schema_doc, staging, write_manifest
from flows import common, privacy
from flows.cells import Cells
from schemas.plausibility import BOUNDS
from schemas.units import CANONICAL
from store import statistics as queries
from store.db import Connection
from store.registry import audit

FORMAT = "vitals-statistics/1"
REGIONS = ("EU", "FI")
PERIODS = ("day", "week", "month")
MIN_SUBJECTS = 10
COLUMNS = ("type", "component", "unit", "period_start", "group", "subjects", "n", "mean")
STATISTICS_SCHEMA = pa.schema(
    [
        pa.field("type", pa.string(), nullable=False),
        pa.field("component", pa.string(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
        pa.field("period_start", pa.date32(), nullable=False),
        pa.field("group", pa.string(), nullable=True),  # null: all subjects
        pa.field("subjects", pa.int64(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("mean", pa.float64(), nullable=True),
        pa.field("sd", pa.float64(), nullable=True),
        pa.field("p10", pa.float64(), nullable=True),
        pa.field("p50", pa.float64(), nullable=True),
        pa.field("p90", pa.float64(), nullable=True),
    ]
)
# Every series a cell can be of: (type, component), in the canonical unit.
SERIES = (
    ("heart-rate", "heart_rate"),
    ("blood-pressure", "systolic_blood_pressure"),
    ("blood-pressure", "diastolic_blood_pressure"),
    ("blood-glucose", "blood_glucose"),
    ("body-weight", "body_weight"),
    ("body-temperature", "body_temperature"),
    ("oxygen-saturation", "oxygen_saturation"),
    ("respiratory-rate", "respiratory_rate"),
    ("step-count", "step_count"),
)
EPOCH = date(1970, 1, 1)
_VALUE_TYPES = {"series": pa.int32(), "day": pa.int32(), "sidx": pa.int32(), "value": pa.float64()}
# Clamping bounds of the DP mechanism: the physiological plausibility bounds
# (nothing outside them is ever stored), coordinates aside (never published).
DP_BOUNDS = {
    k: (float(lo), float(hi))
    for k, (lo, hi) in BOUNDS.items()
    if k not in ("latitude", "longitude")
}


def _check(region: str, period: str, min_subjects: int, epsilon: float | None) -> None:
    if region not in REGIONS:
        raise InputError("invalid_region", f"region must be EU or FI, not {region!r}")
    if period not in PERIODS:
        raise InputError("invalid_period", f"period must be day, week or month, not {period!r}")
    if isinstance(min_subjects, bool) or not isinstance(min_subjects, int) or min_subjects < 1:
        raise InputError("invalid_min_subjects", "--min-subjects must be a positive integer")
    if epsilon is not None and not (0 < epsilon < float("inf")):
        raise InputError("invalid_epsilon", "--epsilon must be a positive number")


def _batches(chunks: Iterator[Any]) -> Iterator[tuple[np.ndarray, ...]]:
    """numpy columns (series, day, subject number, value) of the COPY's CSV."""
    stream = CopyStream(chunks)
    if stream.peek_empty():
        return
    reader = pcsv.open_csv(
        stream,
        read_options=pcsv.ReadOptions(column_names=list(_VALUE_TYPES), block_size=1 << 22),
        convert_options=pcsv.ConvertOptions(column_types=_VALUE_TYPES),
    )
    for batch in reader:
        yield tuple(col.to_numpy(zero_copy_only=False) for col in batch.columns)


def _exact(
    conn: Connection, cutoff: datetime, period: str, min_subjects: int
) -> tuple[list[dict[str, Any]], int]:
    """Every cell exactly (`flows.cells`, two passes over the same snapshot);
    cells from fewer than min_subjects subjects are counted, not returned."""
    subjects = list(queries.subject_groups(conn))  # one small row per subject
    names = sorted({g for _, groups in subjects for g in groups if g is not None})
    if len(names) > 62:
        raise InputError("too_many_groups", "statistics break down by at most 62 groups")
    bit = {g: 1 << i for i, g in enumerate(names)}
    mask_array = np.zeros(max((sidx for sidx, _ in subjects), default=0) + 1, dtype=np.int64)
    for sidx, groups in subjects:
        mask_array[sidx] = sum(bit[g] for g in groups if g is not None)
    cells = Cells([DP_BOUNDS[c] for _, c in SERIES], mask_array, len(names))
    keys = [f"{t}|{c}|{CANONICAL[c]}" for t, c in SERIES]
    # Pass 2 reads pass 1's columns back from an unnamed temp file (deleted on
    # close) instead of querying again: bounded memory, one scan of readings.
    with tempfile.TemporaryFile(prefix="vitals-statistics-") as spool:
        batches = 0
        with queries.values_csv(conn, cutoff, period, keys) as chunks:
            for columns in _batches(chunks):
                cells.pass1(*columns)
                for column in columns:
                    np.save(spool, column, allow_pickle=False)
                batches += 1
        cells.plan_pass2()
        spool.seek(0)
        for _ in range(batches):
            cells.pass2(*(np.load(spool, allow_pickle=False) for _ in range(4)))
    published, suppressed = [], 0
    for cell in cells.results():
        if cell["subjects"] < min_subjects:
            suppressed += 1
            continue
        type_, component = SERIES[cell["series"]]
        published.append(
            {
                "type": type_,
                "component": component,
                "unit": CANONICAL[component],
                "period_start": EPOCH + timedelta(days=cell["day"]),
                "group": None if cell["group"] is None else names[cell["group"]],
            }
            | {k: cell[k] for k in ("subjects", "n", "mean", "sd", "p10", "p50", "p90")}
        )
    published.sort(key=_order)
    return published, suppressed


def _order(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["type"],
        row["component"],
        row["period_start"],
        row["group"] is not None,
        row["group"] or "",
    )


def run_statistics(
    database_url: str,
    export_dir: Path | str,
    region: str = "EU",
    *,
    min_subjects: int = MIN_SUBJECTS,
    period: str = "week",
    epsilon: float | None = None,
    epsilon_budget: float | None = None,
    max_cells: int = privacy.MAX_CELLS,
    max_readings: int = privacy.MAX_READINGS,
    actor: str = "flows.statistics",
) -> dict[str, Any]:
    """Write one statistics release and record it; returns statistics_id, path,
    cells, suppressed_cells, and epsilon (None without DP)."""
    _check(region, period, min_subjects, epsilon)
    statistics_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{region.lower()}-{secrets.token_hex(4)}"
    dataset = f"statistics:{region}"
    budget = None
    spent: dict[str, Any] | None = None
    if epsilon is not None:
        budget = privacy.Budget(
            epsilon, min_subjects, max_cells=max_cells, max_readings=max_readings
        )
        spent = queries.spend_budget(
            database_url,
            dataset=dataset,
            release_id=statistics_id,
            epsilon=epsilon,
            delta=budget.delta,
            mechanism=privacy.MECHANISM,
            actor=actor,
            budget=epsilon_budget,
        )
    with (
        staging(OutputRoot.at(export_dir).child("statistics")) as out,
        queries.snapshot(database_url) as (conn, cutoff),
    ):
        root = out.begin(statistics_id)
        subjects = queries.select_subjects(conn, cutoff, region)
        dp: dict[str, Any] | None = None
        if budget is None:
            rows, suppressed = _exact(conn, cutoff, period, min_subjects)
        else:
            contributions = queries.bounded_contributions(
                conn,
                cutoff,
                period,
                bounds=DP_BOUNDS,
                max_cells=budget.max_cells,
                max_readings=budget.max_readings,
                salt=secrets.token_hex(16),
            )
            rows, suppressed, dp = privacy.release(contributions, DP_BOUNDS, budget)
            dp |= {"dataset": dataset, "dataset_spent_after": spent}
        path = "statistics.parquet"
        table = pa.Table.from_pylist(rows, schema=STATISTICS_SCHEMA)
        pq.write_table(table, root.create(path), compression="zstd", filesystem=root.fs)
        final = out.location
        write_manifest(
            root,
            {
                "format": FORMAT,
                "statistics_id": statistics_id,
                "region": region,
                "period": period,
                "cutoff": cutoff.isoformat(),
                "created_at": datetime.now(UTC).isoformat(),
                "rules": [
                    "subjects with an unwithdrawn research consent covering the cut-off and "
                    "no unlifted research objection; only the readings it covers",
                    "FI residents only in region FI",
                    "valid readings stored by the cut-off; never geoposition or coordinates",
                    "group: memberships open at the cut-off, backed by an analytics consent; "
                    "null = all subjects",
                    f"cells from fewer than {min_subjects} distinct subjects are not published",
                ],
                "min_subjects": min_subjects,
                "suppressed_cells": suppressed,
                "differential_privacy": dp,
                "schema": {"statistics": schema_doc(STATISTICS_SCHEMA)},
                "rows": {"statistics": len(rows)},
                "files": [file_entry(root, path, len(rows), "statistics")],
            },
        )
        queries.record_run(
            conn,
            statistics_id=statistics_id,
            region=region,
            period=period,
            min_subjects=min_subjects,
            epsilon=epsilon,
            cutoff=cutoff,
            path=final,
            cells=len(rows),
            suppressed_cells=suppressed,
            actor=actor,
        )
        audit(
            conn,
            actor,
            "statistics.publish",
            None,
            statistics_id=statistics_id,
            region=region,
            period=period,
            min_subjects=min_subjects,
            epsilon=epsilon,
            subjects_eligible=subjects,
            cells=len(rows),
            suppressed_cells=suppressed,
            path=final,
        )
        out.publish()
    return {
        "statistics_id": statistics_id,
        "path": final,
        "region": region,
        "period": period,
        "cells": len(rows),
        "suppressed_cells": suppressed,
        "epsilon": epsilon,
    }


def run_statistics_from_settings(settings: Any, **params: Any) -> dict[str, Any]:
    return run_statistics(
        settings.require_database_url(),
        settings.export_dir,
        epsilon_budget=settings.statistics_epsilon_budget,
        **params,
    )


# Prefect ----------------------------------------------------------------------


@task(
    name="write-statistics",
    retries=1,
    retry_delay_seconds=[30],
    retry_condition_fn=common.transient_failure,
    cache_policy=NO_CACHE,
)
def statistics_task(
    region: str, min_subjects: int, period: str, epsilon: float | None, actor: str
) -> dict[str, Any]:
    from core.settings import Settings

    return run_statistics_from_settings(
        Settings(),
        region=region,
        min_subjects=min_subjects,
        period=period,
        epsilon=epsilon,
        actor=actor,
    )


@flow(name="vitals-statistics", description="Statistics in non-identifiable form.")
def statistics_flow(
    region: str = "EU",
    min_subjects: int = MIN_SUBJECTS,
    period: str = "week",
    epsilon: float | None = None,
    actor: str = "prefect",
) -> dict[str, Any]:
    result = statistics_task(region, min_subjects, period, epsilon, actor)
    get_run_logger().info(
        "statistics %s (%s, %s): %s cells, %s suppressed",
        result["statistics_id"],
        result["region"],
        result["period"],
        result["cells"],
        result["suppressed_cells"],
    )
    return result
