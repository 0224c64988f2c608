"""Do the gradient-variance signals track, or lead, the loss ratio? The correlation primitives.

For a signal (after a transform of analysis.records.warning: `raw`, `dlog`, `lrm`) against the loss ratio
r_t = L_t / min_{s<t} L_s:

* Pearson and Spearman r with their textbook p-values (which assume independent pairs: too small for
  autocorrelated series) and a **non-overlapping block bootstrap** percentile interval (Carlstein 1986:
  blocks of consecutive steps resampled with replacement, so the autocorrelation inside a block survives).
  Block length max(ceil(n^(1/3)), ceil(n / 2000)); blocks never straddle runs when pooling. The Spearman
  interval reuses the full-sample ranks inside each resample (no re-ranking): close for n >> blocks, and
  it keeps a 1 M-step run to a few matrix products.
* lagged Pearson r(L) = corr(x_t, r_{t+L}) for L in -k..k: L > 0 means the signal leads the loss.

analysis.records.ranking runs them, with the early-warning rule, over every signal of every run.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats

from .warning import _rank

MAX_BLOCKS = 2000
MAX_LAG = 10
N_BOOT = 1000
N_BOOT_GROUPS = 200
"""Resamples for the per-group variants (dozens of exploratory series); whole-model signals get n_boot."""


# --- correlation with a block-bootstrap interval -------------------------------------------------------------


def _z(a: np.ndarray) -> np.ndarray | None:
    """Standardised copy (population std), or None for a constant or too short series."""
    sd = a.std() if len(a) >= 3 else 0.0
    return (a - a.mean()) / sd if sd > 0 else None


def _r_and_p_z(za, zb) -> tuple[float, float]:
    if za is None or zb is None:
        return np.nan, np.nan
    n = len(za)
    r = float(np.clip(np.einsum("i,i->", za, zb) / n, -1.0, 1.0))
    if abs(r) == 1.0:
        return r, 0.0
    t = r * math.sqrt((n - 2) / (1.0 - r * r))
    return r, float(2 * stats.t.sf(abs(t), n - 2))


def block_length(n: int) -> int:
    return max(1, math.ceil(n ** (1 / 3)), math.ceil(n / MAX_BLOCKS))


def _block_starts(n: int, segments: np.ndarray | None, length: int) -> np.ndarray:
    """First position of each block of consecutive positions; a block also starts at every run boundary."""
    if segments is None:
        return np.arange(0, n, length)
    seg = np.asarray(segments)
    first = np.concatenate([[True], seg[1:] != seg[:-1]]) if n else np.zeros(0, bool)
    pos = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    return np.flatnonzero(first | (pos % length == 0))


@lru_cache(maxsize=4)
def _block_counts(nb: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, nb): how often each block is drawn in each resample. Shared by every signal with the same
    number of blocks (common random numbers: differences between signals are not resampling noise)."""
    draws = np.random.default_rng(seed).integers(0, nb, size=(n_boot, nb))
    counts = np.bincount((np.arange(n_boot)[:, None] * nb + draws).ravel(), minlength=n_boot * nb)
    out = counts.reshape(n_boot, nb).astype(np.float64)
    out.flags.writeable = False
    return out


def _boot_interval(za, zb, starts, n_boot, ci, seed) -> tuple[float, float]:
    """Percentile interval of Pearson r under block resampling, from per-block sufficient statistics of the
    standardised series za, zb."""
    if za is None or zb is None or n_boot <= 0:
        return np.nan, np.nan
    sizes = np.diff(np.append(starts, len(za))).astype(np.float64)
    sums = np.stack([sizes] + [np.add.reduceat(w, starts) for w in (za, zb, za * za, zb * zb, za * zb)], axis=1)
    # BLAS here (unlike the dot products of _lags): on 1000 x 2000 @ 2000 x 6 it took 2 ms against einsum's
    # 23 ms, and 7 ms against 33 ms with both cores of the 2-core machine busy with other work.
    s = _block_counts(len(starts), n_boot, seed) @ sums  # (n_boot, 6): resampled sums
    n, sa, sb, saa, sbb, sab = s.T
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (n * sab - sa * sb) / np.sqrt((n * saa - sa * sa) * (n * sbb - sb * sb))
    r = r[np.isfinite(r)]
    if not len(r):
        return np.nan, np.nan
    alpha = (1 - ci) / 2
    return float(np.quantile(r, alpha)), float(np.quantile(r, 1 - alpha))


def _cached_rank(v: np.ndarray, ok: np.ndarray, key, cache: dict | None) -> np.ndarray:
    """Ranks of v[ok]; the target's ranks are reused across signals that share its mask."""
    if cache is None or key is None:
        return _rank(v[ok])
    k = (key, hash(ok.tobytes()))
    if k not in cache:
        if len(cache) >= 4:  # a few masks (one per transform) of one target at a time
            cache.pop(next(iter(cache)))
        cache[k] = _rank(v[ok])
    return cache[k]


def correlation(
    x,
    y,
    *,
    segments=None,
    n_boot: int = N_BOOT,
    ci: float = 0.95,
    seed: int = 0,
    block_len: int | None = None,
    y_key=None,
    cache: dict | None = None,
) -> dict:
    """Pearson and Spearman r, p-values and block-bootstrap intervals over the finite pairs of x and y.

    `y_key` (any hashable naming y) with a `cache` dict lets many signals reuse the target's ranks.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    a, b = x[ok], y[ok]
    seg = None if segments is None else np.asarray(segments)[ok]
    length = block_len or block_length(len(a))
    starts = _block_starts(len(a), seg, length)
    out = {"n": int(len(a)), "block_len": length}
    ranks = (_rank(a), _cached_rank(y, ok, y_key, cache)) if len(a) else (a, b)
    for name, (u, v) in {"pearson": (a, b), "spearman": ranks}.items():
        zu, zv = _z(u), _z(v)
        r, p = _r_and_p_z(zu, zv)
        lo, hi = _boot_interval(zu, zv, starts, n_boot, ci, seed) if np.isfinite(r) else (np.nan, np.nan)
        out.update({f"{name}_r": r, f"{name}_p": p, f"{name}_lo": lo, f"{name}_hi": hi})
    return out


# --- lagged correlation ------------------------------------------------------------------------------------


def _lag_side(v) -> dict:
    """Centred, zero-filled values of one series with prefix sums of them and of their squares."""
    v = np.asarray(v, dtype=np.float64)
    m = np.isfinite(v)
    c = np.where(m, v - (v[m].mean() if m.any() else 0.0), 0.0)
    bad = np.flatnonzero(~m)
    count = np.concatenate([[0.0], np.cumsum(m)]) if len(bad) else np.arange(len(v) + 1, dtype=np.float64)
    return {
        "m": m,
        "c": c,
        "bad": bad,
        "s": np.concatenate([[0.0], np.cumsum(c)]),
        "ss": np.concatenate([[0.0], np.cumsum(c * c)]),
        "count": count,
    }


def _lags(x, y, max_lag: int, y_side: dict | None = None) -> dict[str, np.ndarray]:
    """Pearson r of (x_t, y_{t+lag}) over the overlapping finite pairs, lag = -max_lag..max_lag positions.

    Exact. Values are centred and zero-filled once; per lag only sum(x·y) needs a pass over the data: the
    other sums come from prefix sums, corrected at the (few) positions where the partner is missing.
    `y_side` (= _lag_side(y)) may be passed in when many signals share one target.
    """
    xs, ys = _lag_side(x), y_side or _lag_side(y)
    mx, my, cx, cy, bad_x, bad_y = xs["m"], ys["m"], xs["c"], ys["c"], xs["bad"], ys["bad"]
    pre = {"x": xs["s"], "xx": xs["ss"], "fx": xs["count"], "y": ys["s"], "yy": ys["ss"]}
    lags = np.arange(-max_lag, max_lag + 1)
    r, count = np.full(len(lags), np.nan), np.zeros(len(lags), dtype=np.int64)
    n_all = len(cx)
    for i, lag in enumerate(lags):
        lo, hi = max(0, -lag), min(n_all, n_all - lag)
        if hi - lo < 3:
            continue
        # t in [lo, hi) pairs x_t with y_{t+lag}; t is dropped when x_t or y_{t+lag} is missing.
        gone_y = bad_y[(bad_y >= lo + lag) & (bad_y < hi + lag)] - lag  # t where y is missing
        only_y = gone_y[mx[gone_y]]  # ... and x is present (x-missing t are zero already)
        gone_x = bad_x[(bad_x >= lo) & (bad_x < hi)]
        only_x = gone_x[my[gone_x + lag]]
        n = (pre["fx"][hi] - pre["fx"][lo]) - len(only_y)
        sx = pre["x"][hi] - pre["x"][lo] - cx[only_y].sum()
        sxx = pre["xx"][hi] - pre["xx"][lo] - (cx[only_y] ** 2).sum()
        sy = pre["y"][hi + lag] - pre["y"][lo + lag] - cy[only_x + lag].sum()
        syy = pre["yy"][hi + lag] - pre["yy"][lo + lag] - (cy[only_x + lag] ** 2).sum()
        sxy = np.einsum(
            "i,i->", cx[lo:hi], cy[lo + lag : hi + lag]
        )  # not BLAS: its threads spin on a busy machine (3x slower)
        den = (n * sxx - sx * sx) * (n * syy - sy * sy)
        count[i] = int(round(n))
        if n >= 3 and den > 0:
            r[i] = (n * sxy - sx * sy) / math.sqrt(den)
    return {"lag": lags, "r": r, "n": count}


def lagged_correlation(x, y, max_lag: int = MAX_LAG) -> pd.DataFrame:
    """Pearson r of (x_t, y_{t+lag}) for lag = -max_lag..max_lag positions; lag > 0: x leads y."""
    return pd.DataFrame(_lags(x, y, max_lag))
