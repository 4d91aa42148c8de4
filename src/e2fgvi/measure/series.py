"""Bounded time series and order statistics for the cost record.

A 500k-iteration run must not grow a record without bound: ``Downsampled`` keeps at most
``max_points`` points by averaging neighbouring pairs whenever it fills up, so each stored
point is the mean of ``stride`` consecutive raw rows (a block, which the forecast's block
bootstrap uses directly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from e2fgvi.measure.record import Series, Stats


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


class Downsampled:
    """Rows of floats (``nan`` = missing) kept as at most ``max_points`` block means."""

    def __init__(self, fields: Sequence[str], max_points: int = 1024) -> None:
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        self.fields = tuple(fields)
        self.max_points = max_points
        self.stride = 1
        self._points: list[tuple[list[float], int]] = []  # (column means, raw rows in the block)
        self._sum = [0.0] * len(self.fields)
        self._count = [0] * len(self.fields)
        self._rows = 0

    def add(self, row: Sequence[float | None]) -> None:
        """Append one raw row; values may be None or nan when not measured."""
        for i, value in enumerate(row):
            if value is not None and not math.isnan(value):
                self._sum[i] += value
                self._count[i] += 1
        self._rows += 1
        if self._rows == self.stride:
            self._points.append((self._pending_means(), self._rows))
            self._reset_pending()
            if len(self._points) >= self.max_points:
                self._halve()

    def _pending_means(self) -> list[float]:
        return [s / c if c else math.nan for s, c in zip(self._sum, self._count, strict=True)]

    def _reset_pending(self) -> None:
        self._sum = [0.0] * len(self.fields)
        self._count = [0] * len(self.fields)
        self._rows = 0

    def _halve(self) -> None:
        merged = []
        for i in range(0, len(self._points) - 1, 2):
            (a, na), (b, nb) = self._points[i], self._points[i + 1]
            merged.append(([_mean2(x, na, y, nb) for x, y in zip(a, b, strict=True)], na + nb))
        if len(self._points) % 2:
            merged.append(self._points[-1])
        self._points = merged
        self.stride *= 2

    def points(self) -> list[tuple[list[float], int]]:
        """Block means with their raw-row counts, including a trailing partial block."""
        tail = [(self._pending_means(), self._rows)] if self._rows else []
        return [*self._points, *tail]

    def to_series(self) -> Series:
        """The record's form: field names, rows (None for missing) and each row's raw count."""
        pts = self.points()
        return Series(
            fields=list(self.fields),
            stride=self.stride,
            rows=[[_nan_to_none(v) for v in values] for values, _ in pts],
            counts=[n for _, n in pts],
        )


def _mean2(x: float, nx: int, y: float, ny: int) -> float:
    if math.isnan(x):
        return y
    if math.isnan(y):
        return x
    return (x * nx + y * ny) / (nx + ny)


def describe(values: Sequence[float] | np.ndarray) -> Stats:
    """Count, mean, std, min, p10, median, p90, max of a sample (None when empty)."""
    data = np.asarray(values, dtype=float)
    keys = ("mean", "std", "min", "p10", "median", "p90", "max")
    if data.size == 0:
        return Stats(n=0, **dict.fromkeys(keys))
    p10, median, p90 = np.percentile(data, [10, 50, 90])
    figures = (data.mean(), data.std(), data.min(), p10, median, p90, data.max())
    return Stats(n=int(data.size), **{k: float(v) for k, v in zip(keys, figures, strict=True)})
