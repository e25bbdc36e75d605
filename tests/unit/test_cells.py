"""flows.cells without I/O: exact cells from batches in two passes, against
numpy over the whole data (percentiles as percentile_cont: linear)."""

from __future__ import annotations

import numpy as np
import pytest

from flows.cells import BINS, Cells


def run(
    bounds: list[tuple[float, float]],
    masks: np.ndarray,
    groups: int,
    data: tuple[np.ndarray, ...],
    batch: int,
) -> list[dict[str, object]]:
    cells = Cells(bounds, masks, groups)
    n = len(data[0])
    for start in range(0, n, batch):
        cells.pass1(*(col[start : start + batch] for col in data))
    cells.plan_pass2()
    for start in range(0, n, batch):
        cells.pass2(*(col[start : start + batch] for col in data))
    return cells.results()


@pytest.mark.parametrize("batch", [1, 7, 1000, 100_000])
def test_cells_are_exact(batch: int) -> None:
    rng = np.random.default_rng(batch)
    n, subjects = 5_000, 40
    bounds = [(20.0, 300.0), (0.0, 200_000.0)]
    series = rng.integers(0, 2, n).astype(np.int32)
    day = rng.choice([20_000, 20_007, -3_000], n).astype(np.int32)  # 1913 too
    sidx = rng.integers(1, subjects + 1, n).astype(np.int32)
    # ties, values far outside the bounds (clipped into the edge bins), a narrow cluster
    value = np.where(
        series == 0,
        rng.choice([60.0, 61.5, 72.25, 5.0, 400.0], n) + rng.integers(0, 3, n) * 1e-9,
        rng.normal(8_000, 50, n),
    )
    masks = rng.integers(0, 8, subjects + 1).astype(np.int64)  # 3 groups
    got = run(bounds, masks, 3, (series, day, sidx, value), batch)
    seen = set()
    for row in got:
        sel = (series == row["series"]) & (day == row["day"])
        if row["group"] is not None:
            sel &= ((masks[sidx] >> row["group"]) & 1).astype(bool)
        v = value[sel]
        assert row["n"] == len(v) and row["subjects"] == len(np.unique(sidx[sel]))
        assert row["mean"] == pytest.approx(v.mean(), rel=1e-12)
        assert row["sd"] == pytest.approx(v.std(ddof=1), rel=1e-9)
        for q in (10, 50, 90):
            assert row[f"p{q}"] == np.percentile(v, q), (row, q)
        seen.add((row["series"], row["day"], row["group"]))
    expected = {
        (s, d, g)
        for s in (0, 1)
        for d in (20_000, 20_007, -3_000)
        for g in (None, 0, 1, 2)
        if ((series == s) & (day == d)).any()
    }
    assert seen == expected


def test_one_reading_and_empty_input() -> None:
    masks = np.array([0, 1], dtype=np.int64)
    one = tuple(np.array([x]) for x in (0, 19_000, 1)) + (np.array([123.0]),)
    [group, all_] = sorted(
        run([(0.0, 1000.0)], masks, 1, one, 10), key=lambda r: r["group"] is None
    )
    assert group["group"] == 0 and all_["group"] is None
    for row in (all_, group):
        assert (row["n"], row["subjects"], row["mean"], row["sd"]) == (1, 1, 123.0, None)
        assert row["p10"] == row["p50"] == row["p90"] == 123.0
    empty = tuple(np.zeros(0, dtype=t) for t in (np.int32, np.int32, np.int32, np.float64))
    assert run([(0.0, 1.0)], masks, 1, empty, 10) == []
    assert BINS >= 256
