"""When a series first left its recent level: the one noise-aware rule of the spike attribution.

A series is judged on its own scale: a loss in nats as it is (it is the log of a perplexity already), any other
series as log(x) when all its finite values are > 0, else asinh(x / c) with c the median |x| of the series
(signed estimators such as |G|^2 and B_simple; asinh is log-like for large values and linear through zero).
At a recorded position i, its previous WINDOW recorded values are carried to i along their own trend (the
Theil-Sen slope: the median slope over all pairs, robust to a spike in the window); the *level* is the median
of the last LEVEL_N carried values and the *spread* 1.4826 x the median absolute deviation of all of them (a
normal's standard deviation), floored at SCALE_FLOOR. It *departs* at i when

    y_i - level  >  K x spread     and     y_i - level  >=  MIN_RISE

with at least MIN_HISTORY previous values. Early training moves every series steeply (Adam's state fills in,
the gradient norm and the update per unit LR fall by a decade in a few dozen steps); carried along its trend,
such a series stays at its level while a jump stands out. Only rises count. Positions are recorded values, so
a sparse series (one row every P steps, NaN rows) is judged on its own records, and its departure is known
only to lie after its previous one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

WINDOW = 32
"""Previous recorded values that make a series' level and spread."""
LEVEL_N = 5
"""The level is the median of the last LEVEL_N carried values: a trend is carried a few steps only, so the
bend of a decay (steep at first, flat later) does not put the level below the values."""
MIN_HISTORY = 12
"""A departure needs at least this many previous recorded values (fewer: the series is not judged there)."""
K = 6.0
"""A departure exceeds the level by this many robust spreads (diagnose's spike rule uses 6 noise scales too)."""
MIN_RISE = math.log(1.2)
"""...and by this much in the series' scale: x1.2 for a positive series, whatever its spread."""
SCALE_FLOOR = 0.01
"""The spread is at least this (1% of a positive series): a constant series (a flat LR, a fixed sequence length)
departs on any rise of at least MIN_RISE."""
MAD_SIGMA = 1.4826


def to_scale(x, nats: bool = False) -> tuple[np.ndarray, str]:
    """(y, scale name): log x for a positive series, asinh(x / median|x|) for one with values <= 0, x itself for
    a loss in nats (already the log of a perplexity: MIN_RISE is then perplexity x1.2)."""
    x = np.asarray(x, dtype=np.float64)
    if nats:
        return x.copy(), "nats"
    ok = np.isfinite(x)
    if ok.any() and (x[ok] > 0).all():
        return np.where(ok, np.log(np.where(ok, x, 1.0)), np.nan), "log"
    c = float(np.median(np.abs(x[ok]))) if ok.any() else 1.0
    c = c if c > 0 else 1.0
    return np.arcsinh(x / c), "asinh"


@dataclass(frozen=True)
class Level:
    level: float
    spread: float
    n: int
    """Previous recorded values it was made from."""


@functools.cache
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = np.triu_indices(n, 1)
    return a, b, 1.0 / (b - a)


def trend_slope(prev: np.ndarray) -> float:
    """Theil-Sen slope per position of a window (the median of the slopes of all pairs); 0 under 3 values."""
    n = len(prev)
    if n < 3:
        return 0.0
    a, b, inv = _pairs(n)
    return float(np.median((prev[b] - prev[a]) * inv))


def level_before(y: np.ndarray, i: int, window: int = WINDOW) -> Level:
    """The level and spread at position i of the recorded (finite) values y[:i] (the last `window` of them):
    each carried to position i along the window's Theil-Sen trend, then their median and robust spread."""
    prev = y[max(0, i - window) : i]
    if not len(prev):
        return Level(math.nan, math.nan, 0)
    carried = prev + trend_slope(prev) * (len(prev) - np.arange(len(prev)))
    mid = float(np.median(carried))
    spread = max(MAD_SIGMA * float(np.median(np.abs(carried - mid))), SCALE_FLOOR)
    return Level(float(np.median(carried[-LEVEL_N:])), spread, len(prev))


def levels(y: np.ndarray, idx: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(level, spread, n) at each position of idx, as level_before; positions with a full window in one pass."""
    idx = np.asarray(idx, dtype=np.int64)
    lev, spr, n = np.full(len(idx), np.nan), np.full(len(idx), np.nan), np.minimum(idx, window)
    full = idx >= window
    if full.any() and window >= 3:
        w = np.lib.stride_tricks.sliding_window_view(y, window)[idx[full] - window]  # (m, window)
        a, b, inv = _pairs(window)
        slope = np.median((w[:, b] - w[:, a]) * inv, axis=1)
        carried = w + slope[:, None] * (window - np.arange(window))
        mid = np.median(carried, axis=1)
        lev[full] = np.median(carried[:, -LEVEL_N:], axis=1)
        spr[full] = np.maximum(MAD_SIGMA * np.median(np.abs(carried - mid[:, None]), axis=1), SCALE_FLOOR)
    for k in np.flatnonzero(~full):
        lv = level_before(y, int(idx[k]), window)
        lev[k], spr[k] = lv.level, lv.spread
    return lev, spr, n


def departs(y: np.ndarray, i: int, window: int = WINDOW, min_history: int = MIN_HISTORY) -> tuple[bool, float, Level]:
    """(departs, robust z, level) of recorded position i of a series of finite values y."""
    lv = level_before(y, i, window)
    if lv.n < min_history:
        return False, math.nan, lv
    rise = float(y[i]) - lv.level
    z = rise / lv.spread
    return bool(z > K and rise >= MIN_RISE), z, lv


@dataclass(frozen=True)
class Departure:
    """The first recorded step in a range where a series left its level (and, before `until`, stayed out)."""

    step: int
    prev_step: int
    """The series' recorded step before it (-1: none): the departure lies in (prev_step, step]."""
    z: float
    rise: float
    """y - level in the series' scale (log: the log of the factor)."""
    level: float
    value: float


def first_departure(
    steps: np.ndarray, y: np.ndarray, lo: int, hi: int, until: int, window: int = WINDOW
) -> tuple[Departure | None, bool]:
    """(departure, judged) of a series of recorded (step, finite y) in steps [lo, hi].

    A departure counts only where the series was at its level at its previous record (a series still up from
    an earlier event did not *leave* its level here). One before step `until` (the loss's own departure)
    counts only if the series stays out of its level up to `until`: every recorded value in between at least
    half the required rise above the level it left (a one-step blip that is back down before the loss moved
    is not what led it). judged: some position in [lo, hi] had enough history to be judged at all."""
    i0, i1 = int(np.searchsorted(steps, lo, "left")), int(np.searchsorted(steps, hi, "right"))
    if i1 <= i0:
        return None, False
    pos = np.arange(max(i0 - 1, 0), i1)
    lev, spr, n = levels(y, pos, window)
    rise = y[pos] - lev
    with np.errstate(invalid="ignore"):
        z = rise / spr
        out = (n >= MIN_HISTORY) & (z > K) & (rise >= MIN_RISE)
    judged = bool((n[pos >= i0] >= MIN_HISTORY).any())
    for k in np.flatnonzero(out & (pos >= i0)):
        # it must have been at its level at its previous record: a series still up did not leave it here
        if k > 0 and out[k - 1]:
            continue
        i = int(pos[k])
        lv = Level(float(lev[k]), float(spr[k]), int(n[k]))
        s = int(steps[i])
        if s < until - 1:
            j1 = np.searchsorted(steps, until, "left")
            need = max(K / 2 * lv.spread, MIN_RISE / 2)
            if (y[i + 1 : j1] - lv.level < need).any():
                continue
        prev = int(steps[i - 1]) if i > 0 else -1
        return Departure(s, prev, float(z[k]), float(rise[k]), lv.level, float(y[i])), True
    return None, judged
