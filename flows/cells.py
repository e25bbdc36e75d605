"""Exact statistics cells from a stream of readings, in bounded memory.

A cell is (series, period, group): series = (type, component, unit), group
= all subjects or one group. A subject in several groups counts in each, so
the group cells hold about four times as many rows as there are readings;
sorting or hashing that expansion in PostgreSQL costs minutes at 5M readings
on two cores. Here every reading is seen once per pass, as four numbers
(series index, period day, subject index, value), read once from an
unordered COPY (the caller replays them for pass 2 from a temp file):

- pass 1 adds, per cell and group, the count, the sum (shifted by the
  cell's first value) and a histogram of `BINS` bins over the series'
  bounds, and marks which subjects have readings in which cell;
- the ranks that percentile_cont needs (p * (n - 1), floor and ceiling) are
  located in the histograms;
- pass 2 adds the squared deviations from the mean (the two-pass variance)
  and keeps only the values that fall into those bins, so the order
  statistics, hence the percentiles, are exact.

Memory is bounded by cells x groups x bins and by subjects x cells (one
byte each), never by the number of readings. Pure: numpy only, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

BINS = 1024
QUANTILES = (0.1, 0.5, 0.9)
_DAYS = 131_072  # period days the lookup table covers: 1900-01-01 ..
_OFFSET = 25_567  # days from 1900-01-01 to 1970-01-01


class Cells:
    """Accumulates `pass1` batches, then `pass2` batches, then `results`.

    `bounds[s]` = (lo, hi) of series s (values outside are clipped into the
    edge bins, which stays exact); `masks[sidx]` = the subject's group bits
    (bit g: group g; "all subjects" is added as the last group)."""

    def __init__(
        self, bounds: Sequence[tuple[float, float]], masks: np.ndarray, n_groups: int
    ) -> None:
        self.lo = np.array([b[0] for b in bounds], dtype=np.float64)
        self.hi = np.array([b[1] for b in bounds], dtype=np.float64)
        self.masks = masks.astype(np.int64)
        self.groups = n_groups + 1  # the last one: all subjects
        # (series, period day) -> cell, as a lookup table over days since 1970
        self._lookup = np.full((len(bounds), _DAYS), -1, dtype=np.int64)
        self._keys: list[tuple[int, int]] = []
        cap = 16
        self.shift = np.zeros(cap, dtype=np.float64)  # the cell's first value
        self.mean = np.zeros((cap, self.groups), dtype=np.float64)
        self.n = np.zeros((cap, self.groups), dtype=np.int64)
        self.s = np.zeros((cap, self.groups), dtype=np.float64)
        self.ss = np.zeros((cap, self.groups), dtype=np.float64)
        self.hist = np.zeros((cap, self.groups, BINS), dtype=np.int32)
        self.seen = np.zeros((len(masks), cap), dtype=bool)  # subject x cell
        self._targets: np.ndarray | None = None
        self._found: list[tuple[np.ndarray, np.ndarray]] = []

    # pass 1 -----------------------------------------------------------------

    def _cells(
        self, series: np.ndarray, day: np.ndarray, value: np.ndarray, grow: bool
    ) -> np.ndarray:
        day = day.astype(np.int64) + _OFFSET
        if len(day) and (day.min() < 0 or day.max() >= _DAYS):
            raise ValueError("a reading's period lies outside 1900..2258")
        cell = self._lookup[series, day]
        missing = cell < 0
        if missing.any():
            assert grow, "pass 2 met a cell pass 1 did not"
            first = len(self._keys)
            for sr, d in np.unique(np.stack([series[missing], day[missing]]), axis=1).T:
                self._lookup[sr, d] = len(self._keys)
                self._keys.append((int(sr), int(d) - _OFFSET))
            if len(self._keys) > len(self.n):
                self._grow(max(len(self._keys), 2 * len(self.n)))
            cell = self._lookup[series, day]
            new = np.flatnonzero(cell >= first)
            self.shift[cell[new[::-1]]] = value[new[::-1]]  # the first row of each wins
        return cell

    def _grow(self, cap: int) -> None:
        def grown(a: np.ndarray) -> np.ndarray:
            out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
            out[: len(a)] = a
            return out

        self.shift, self.mean, self.n, self.s, self.ss, self.hist = (
            grown(a) for a in (self.shift, self.mean, self.n, self.s, self.ss, self.hist)
        )
        seen = np.zeros((len(self.seen), cap), dtype=bool)
        seen[:, : self.seen.shape[1]] = self.seen
        self.seen = seen

    def _bins(self, series: np.ndarray, value: np.ndarray) -> np.ndarray:
        lo, hi = self.lo[series], self.hi[series]
        scaled = (value - lo) / (hi - lo) * BINS
        return np.clip(np.floor(scaled), 0, BINS - 1).astype(np.int64)

    def _groups_of(self, sidx: np.ndarray) -> Iterator[tuple[int, np.ndarray | None]]:
        """(group, rows of its members or None for every row), for each group."""
        masks = self.masks[sidx]
        for g in range(self.groups - 1):
            rows = np.flatnonzero((masks >> g) & 1)
            if len(rows):
                yield g, rows
        yield self.groups - 1, None

    def pass1(
        self, series: np.ndarray, day: np.ndarray, sidx: np.ndarray, value: np.ndarray
    ) -> None:
        cell = self._cells(series, day, value, grow=True)
        shifted = value - self.shift[cell]
        bins = self._bins(series, value)
        cap = len(self.n)
        for g, rows in self._groups_of(sidx):
            c = cell if rows is None else cell[rows]
            v = shifted if rows is None else shifted[rows]
            b = bins if rows is None else bins[rows]
            self.n[:, g] += np.bincount(c, minlength=cap)
            self.s[:, g] += np.bincount(c, weights=v, minlength=cap)
            self.hist[:, g, :] += np.bincount(c * BINS + b, minlength=cap * BINS).reshape(cap, BINS)
        self.seen[sidx, cell] = True

    # between the passes -------------------------------------------------------

    def _ranks(self, n: int) -> list[int]:
        return sorted(
            {r for q in QUANTILES for r in (math.floor(q * (n - 1)), math.ceil(q * (n - 1)))}
        )

    def plan_pass2(self) -> None:
        """The means; the histogram bins holding every rank a percentile needs."""
        counted = self.n > 0
        self.mean[counted] = (self.shift[:, None] + self.s / np.maximum(self.n, 1))[counted]
        targets = np.zeros(len(self.n) * self.groups * BINS, dtype=bool)
        for c in range(len(self._keys)):
            for g in range(self.groups):
                n = int(self.n[c, g])
                if not n:
                    continue
                cum = np.cumsum(self.hist[c, g])
                for r in self._ranks(n):
                    b = int(np.searchsorted(cum, r, side="right"))
                    targets[(c * self.groups + g) * BINS + b] = True
        self._targets = targets

    # pass 2 -----------------------------------------------------------------

    def pass2(
        self, series: np.ndarray, day: np.ndarray, sidx: np.ndarray, value: np.ndarray
    ) -> None:
        assert self._targets is not None, "plan_pass2 first"
        cell = self._cells(series, day, value, grow=False)
        bins = self._bins(series, value)
        cap = len(self.n)
        for g, rows in self._groups_of(sidx):
            c = cell if rows is None else cell[rows]
            b = bins if rows is None else bins[rows]
            v = value if rows is None else value[rows]
            deviation = v - self.mean[c, g]
            self.ss[:, g] += np.bincount(c, weights=deviation * deviation, minlength=cap)
            flat = (c * self.groups + g) * BINS + b
            hit = self._targets[flat]
            if hit.any():
                self._found.append((flat[hit], v[hit]))

    # results ----------------------------------------------------------------

    def results(self) -> list[dict[str, Any]]:
        """One dict per non-empty (cell, group): series, day, group (index,
        None = all subjects), subjects, n, mean, sd, p10, p50, p90."""
        flat = np.concatenate([f for f, _ in self._found]) if self._found else np.zeros(0, int)
        vals = np.concatenate([v for _, v in self._found]) if self._found else np.zeros(0)
        order = np.lexsort((vals, flat))
        flat, vals = flat[order], vals[order]
        starts = {int(k): int(i) for k, i in zip(*np.unique(flat, return_index=True), strict=True)}

        cells = len(self._keys)
        members = np.zeros((len(self.masks), self.groups), dtype=np.int64)
        for g in range(self.groups - 1):
            members[:, g] = (self.masks >> g) & 1
        members[:, self.groups - 1] = 1
        subjects = self.seen[:, :cells].T.astype(np.int64) @ members  # cell x group
        out = []
        for c, (series, day) in enumerate(self._keys):
            for g in range(self.groups):
                n = int(self.n[c, g])
                if not n:
                    continue
                everyone = g == self.groups - 1
                ss = float(self.ss[c, g])
                cum = np.cumsum(self.hist[c, g])

                def order_statistic(r: int, c: int = c, g: int = g, cum: np.ndarray = cum) -> float:
                    b = int(np.searchsorted(cum, r, side="right"))
                    below = int(cum[b - 1]) if b else 0
                    return float(vals[starts[(c * self.groups + g) * BINS + b] + r - below])

                row: dict[str, Any] = {
                    "series": series,
                    "day": day,
                    "group": None if everyone else g,
                    "subjects": int(subjects[c, g]),
                    "n": n,
                    "mean": float(self.mean[c, g]),
                    "sd": math.sqrt(ss / (n - 1)) if n > 1 else None,
                }
                for q in QUANTILES:
                    pos = q * (n - 1)
                    lo_v = order_statistic(math.floor(pos))
                    hi_v = order_statistic(math.ceil(pos))
                    row[f"p{round(q * 100)}"] = lo_v + (hi_v - lo_v) * (pos - math.floor(pos))
                out.append(row)
        return out
