"""Intervals for pooled statistics by resampling whole runs.

Steps of one run are not independent draws (a spike spans several steps, the state carries over), so a
pooled statistic over steps of many runs is resampled at the level that is independent: the run. Pass one
item per run (or per seed, holding all arms of that seed, for a paired comparison); each bootstrap sample
draws as many items with replacement and applies the statistic to the list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float
    """The statistic on the runs as given."""
    low: float
    high: float
    """Percentile bootstrap bounds at `level`; NaN with fewer than 2 runs (resampling one run says nothing)
    or when no resample gave a finite value."""
    n_runs: int
    n_finite: int
    """Resamples whose statistic was finite (a resample of identical runs can make a correlation NaN); the
    bounds are taken over these."""
    level: float = 0.95


def run_bootstrap(
    runs: Sequence,
    statistic: Callable[[list], float],
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The statistic over `runs` and its percentile interval from `n_boot` resamples of whole runs."""
    runs = list(runs)
    n = len(runs)
    estimate = float(statistic(runs)) if n else math.nan
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, 0, level)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    values = np.array([float(statistic([runs[i] for i in row])) for row in draws])
    finite = values[np.isfinite(values)]
    if not len(finite):
        return Interval(estimate, math.nan, math.nan, n, 0, level)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), n, len(finite), level)


def pooled(values_of: Callable, reduce: Callable[[np.ndarray], float]) -> Callable[[list], float]:
    """A statistic that concatenates each run's values (values_of(run) -> array) and reduces the pool, e.g.
    pooled(lambda r: r["adam_vhat_max"], np.median)."""
    return lambda runs: reduce(np.concatenate([np.asarray(values_of(r), dtype=float) for r in runs]))
