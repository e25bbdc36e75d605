"""Differentially private release of statistics cells, through OpenDP.

The privacy unit is one person (subject). Before anything is released, SQL
bounds each person's contribution (`store.statistics.bounded_contributions`):
at most `max_cells` cells per person, at most `max_readings` readings per
person and cell, every value clamped to its component's plausibility bounds
(`schemas.plausibility.BOUNDS`) and scaled to [-1, 1]. Adding or removing one
person then changes, over all cells together, the subject counts by at most
`max_cells` (at most 1 in each cell), the reading counts and the scaled sums
by at most `max_cells * max_readings`: finite sensitivities, so finite noise.

The budget ε of a run is split (`SPLIT`) between four releases, composed
sequentially (ε adds up, δ comes from the first only):

1. which cells are published, with their subject counts: OpenDP's
   Laplace threshold mechanism (`make_laplace_threshold`) over the map
   cell -> subjects (ℓ0 = max_cells, ℓ∞ = 1). A cell is published only if
   its noisy count reaches the threshold, which is at least --min-subjects
   and high enough that a cell owed to one person appears with probability
   within δ (`DELTA`): (ε₁, δ)-DP.
2. the reading counts `n` of the published cells: discrete Laplace
   (`make_laplace` on integers), ℓ1 sensitivity max_cells * max_readings.
3. the scaled sums of the published cells: Laplace on floats, the same
   sensitivity; mean = midpoint + half-range * noisy sum / noisy n, clamped
   to the bounds (post-processing).
4. how many cells were not published (for the manifest): discrete Laplace on
   the number of candidate cells (sensitivity max_cells), minus the number
   published.

sd and the percentiles are not released (null). Every mechanism's privacy
map is checked against its share of ε before it runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DELTA = 1e-6
MAX_CELLS = 32
MAX_READINGS = 24
SPLIT = {"cells": 0.3, "n": 0.3, "sum": 0.3, "suppressed": 0.1}
MECHANISM = (
    "OpenDP 0.16: Laplace threshold on cell subject counts (cell selection), "
    "discrete Laplace on reading counts, Laplace on clamped scaled sums, discrete "
    "Laplace on the count of unpublished cells; sequential composition"
)


@dataclass(frozen=True)
class Budget:
    epsilon: float
    min_subjects: int
    delta: float = DELTA
    max_cells: int = MAX_CELLS
    max_readings: int = MAX_READINGS


def _dp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def _checked(meas: Any, d_in: Any, epsilon: float, what: str) -> Any:
    spent = meas.map(d_in)
    eps = spent[0] if isinstance(spent, tuple) else spent
    if eps > epsilon * (1 + 1e-9):
        raise AssertionError(f"{what}: mechanism spends {eps} > {epsilon}")
    return meas


def _threshold_measurement(dp: Any, scale: float, budget: Budget, epsilon: float) -> Any:
    """The Laplace threshold mechanism with the smallest threshold >= min_subjects
    whose delta is within budget.delta."""
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    metric = dp.l01inf_distance(dp.absolute_distance(T="i64"))
    d_in = (budget.max_cells, budget.max_cells, 1)

    def make(threshold: int) -> Any:
        return dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)

    def delta(threshold: int) -> float:
        return float(make(threshold).map(d_in)[1])

    lo = max(1, budget.min_subjects)
    if delta(lo) <= budget.delta:
        return _checked(make(lo), d_in, epsilon, "cell selection"), lo
    hi = lo * 2
    while delta(hi) > budget.delta:
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if delta(mid) <= budget.delta else (mid, hi)
    return _checked(make(hi), d_in, epsilon, "cell selection"), hi


def release(
    cells: Sequence[Mapping[str, Any]],
    bounds: Mapping[str, tuple[float, float]],
    budget: Budget,
) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    """Release bounded cells (type, component, unit, period_start, group,
    subjects, n, sum_scaled) under `budget`. Returns the published rows
    (subjects, n, mean noisy; sd and percentiles None), the noisy number of
    unpublished cells, and what the manifest records."""
    dp = _dp()
    eps = {k: budget.epsilon * share for k, share in SPLIT.items()}
    per_cell = budget.max_cells * budget.max_readings

    scale_cells = budget.max_cells / eps["cells"]
    select, threshold = _threshold_measurement(dp, scale_cells, budget, eps["cells"])
    keyed = {_key(c): c for c in cells}
    chosen = select({k: int(c["subjects"]) for k, c in keyed.items()})
    published = sorted(chosen, key=lambda k: _order(keyed[k]))

    scale_n = per_cell / eps["n"]
    noisy_n = _checked(
        dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale_n
        ),
        per_cell,
        eps["n"],
        "reading counts",
    )([int(keyed[k]["n"]) for k in published])
    scale_sum = per_cell / eps["sum"]
    noisy_sum = _checked(
        dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T=float, nan=False)),
            dp.l1_distance(T=float),
            scale=scale_sum,
        ),
        float(per_cell),
        eps["sum"],
        "sums",
    )([float(keyed[k]["sum_scaled"]) for k in published])
    scale_supp = budget.max_cells / eps["suppressed"]
    noisy_candidates = _checked(
        dp.m.make_laplace(dp.atom_domain(T="i64"), dp.absolute_distance(T="i64"), scale=scale_supp),
        budget.max_cells,
        eps["suppressed"],
        "unpublished cells",
    )(len(keyed))

    rows = []
    for k, n, total in zip(published, noisy_n, noisy_sum, strict=True):
        cell = keyed[k]
        lo, hi = bounds[cell["component"]]
        n = max(int(n), 0)
        mean = None
        if n > 0:
            mean = min(hi, max(lo, (lo + hi) / 2 + (hi - lo) / 2 * total / n))
        rows.append(
            {
                **{f: cell[f] for f in ("type", "component", "unit", "period_start", "group")},
                "subjects": int(chosen[k]),
                "n": n,
                "mean": mean,
                "sd": None,
                "p10": None,
                "p50": None,
                "p90": None,
            }
        )
    suppressed = max(int(noisy_candidates) - len(published), 0)
    details = {
        "epsilon": budget.epsilon,
        "delta": budget.delta,
        "mechanism": MECHANISM,
        "privacy_unit": "one subject (person)",
        "split": {k: round(v, 12) for k, v in eps.items()},
        "max_cells_per_subject": budget.max_cells,
        "max_readings_per_subject_and_cell": budget.max_readings,
        "clamping_bounds": {k: list(v) for k, v in sorted(bounds.items())},
        "publication_threshold": threshold,
        "noise_scales": {
            "cells": scale_cells,
            "n": scale_n,
            "sum": scale_sum,
            "suppressed": scale_supp,
        },
        "released_without_noise": "nothing; sd and percentiles are not released",
    }
    return rows, suppressed, details


def _key(cell: Mapping[str, Any]) -> str:
    return "|".join(
        str(cell[f] if cell[f] is not None else "")
        for f in ("type", "component", "unit", "period_start", "group")
    )


def _order(cell: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        cell["type"],
        cell["component"],
        cell["period_start"],
        cell["group"] is not None,
        cell["group"] or "",
    )


assert math.isclose(sum(SPLIT.values()), 1.0)
