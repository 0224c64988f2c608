"""Do the gradient-variance signals track, or lead, the loss ratio?

For each signal (step-level columns, and per-group variants `stat[group]` from the layers table) and each
transform — `raw`, `dlog` (step-to-step change of log x) and `lrm` (log ratio to the rolling median of the
previous `window` values) — against the loss ratio r_t = L_t / min_{s<t} L_s:

* Pearson and Spearman r with their textbook p-values (which assume independent pairs: too small for
  autocorrelated series) and a **non-overlapping block bootstrap** percentile interval (Carlstein 1986:
  blocks of consecutive steps resampled with replacement, so the autocorrelation inside a block survives).
  Block length max(ceil(n^(1/3)), ceil(n / 2000)); blocks never straddle runs when pooling. The Spearman
  interval reuses the full-sample ranks inside each resample (no re-ranking): close for n >> blocks, and
  it keeps a 1 M-step run to a few matrix products.
* lagged Pearson r(L) = corr(x_t, r_{t+L}) for L in -k..k: L > 0 means the signal leads the loss.
* early warning (the rule is in analysis.warning): an alarm at step t when x_t exceeds the `q` quantile of its
  previous `window` values (the rolling quantile removes the drift of raw Adam state); positives are steps with
  a spike event starting in (t, t+h]; steps inside spikes are left out. AUROC of the score x_t / quantile - 1,
  step-level precision, event-level recall and the median lead time (event start - first alarm in its h-step
  window).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats

from .metrics import STEP_SIGNALS, Signal, align_to, run_signals, target_of  # noqa: F401 (re-exported)

# Also taken from here by report.py, figures.py and the tests.
from .warning import ALARM_Q, HORIZON, WINDOW, _rank, lead_times, rolling_prev, warning_frame, warning_scores

TRANSFORMS = ("raw", "dlog", "lrm")
MAX_BLOCKS = 2000
MAX_LAG = 10
N_BOOT = 1000
N_BOOT_GROUPS = 200
"""Resamples for the per-group variants (dozens of exploratory series); whole-model signals get n_boot."""


def transform(x, kind: str, window: int = WINDOW, median=None) -> np.ndarray:
    """raw, dlog (diff of log; non-positive -> NaN) or lrm (log x - log median of the previous window)."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "raw":
        return x
    with np.errstate(divide="ignore", invalid="ignore"):
        lx = np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)
    if kind == "dlog":
        return np.concatenate([[np.nan], np.diff(lx)]) if len(lx) else lx
    if kind == "lrm":
        med = rolling_prev(x, window, 0.5) if median is None else median
        with np.errstate(divide="ignore", invalid="ignore"):
            return lx - np.log(np.where(med > 0, med, np.nan))
    raise ValueError(f"unknown transform {kind!r}; use one of {TRANSFORMS}")


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


# --- per run and pooled ------------------------------------------------------------------------------------


def _spacing(step: np.ndarray) -> float:
    return float(np.median(np.diff(step))) if len(step) > 1 else 1.0


def analyze_runs(
    runs,
    source: str = "train",
    signals=STEP_SIGNALS,
    groups: bool = True,
    transforms=TRANSFORMS,
    max_lag: int = MAX_LAG,
    horizon: int = HORIZON,
    window: int = WINDOW,
    q: float = ALARM_Q,
    n_boot: int = N_BOOT,
    seed: int = 0,
    n_boot_groups: int = N_BOOT_GROUPS,
) -> dict[str, pd.DataFrame]:
    """Correlations, lagged correlations and early-warning scores per run and pooled (run == 'pooled').

    Returns {"correlations", "lags", "early_warning"}; `source` picks the training loss ratio or the
    probe loss ratio as the target. Per-group variants use `n_boot_groups` resamples.
    """
    opts = {
        "transforms": transforms,
        "max_lag": max_lag,
        "horizon": horizon,
        "window": window,
        "q": q,
        "seed": seed,
        "n_boot": n_boot,
        "n_boot_groups": n_boot_groups,
    }
    # With one run the pooled rows are that run's rows: keep no copies of its series for pooling.
    acc = {"corr": [], "lags": [], "warn": [], "pool": {}, "ranks": {}, "sides": {}, "pooling": len(runs) > 1}
    for k, run in enumerate(runs):
        target = target_of(run, source)
        for sig in run_signals(run, signals, groups):
            _analyze_signal(k, run, sig, target, acc, opts)
    out = {
        "correlations": pd.DataFrame(acc["corr"]),
        "lags": _stack(acc["lags"]),
        "early_warning": pd.DataFrame(acc["warn"]),
    }
    return _with_pooled(out, runs, acc["pool"], opts)


def _analyze_signal(k, run, sig: Signal, target, acc: dict, o: dict) -> None:
    """All transforms of one signal of one run against the target; rows go into `acc`."""
    tgt_step, ratio, spans = target
    ident = {"run": run.name, "method": run.method, "signal": sig.name, "stat": sig.stat, "group": sig.group}
    y = align_to(sig.step, tgt_step, ratio)
    y_key = (k, hash(sig.step.tobytes()))  # signals sampled at the same steps share the target
    if y_key not in acc["sides"]:
        acc["sides"] = {y_key: _lag_side(y)}  # one target at a time
    n_boot = o["n_boot"] if sig.group == "all" else o["n_boot_groups"]
    median, thr = rolling_prev(sig.x, o["window"], (0.5, o["q"]))  # one pass for the lrm and the alarm
    for tr in o["transforms"]:
        xt = transform(sig.x, tr, o["window"], median=median)
        acc["corr"].append(
            ident
            | {"transform": tr}
            | correlation(xt, y, n_boot=n_boot, seed=o["seed"], y_key=y_key, cache=acc["ranks"])
        )
        lag = _lags(xt, y, o["max_lag"], acc["sides"][y_key])
        acc["lags"].append(ident | {"transform": tr, "lag_steps": lag["lag"] * _spacing(sig.step)} | lag)
        if acc["pooling"]:
            _pool_add(acc["pool"], (sig.name, tr), xt, y, k, o["max_lag"], _spacing(sig.step), n_boot)
    frame = warning_frame(sig.x, sig.step, spans, o["horizon"], o["window"], o["q"], thr=thr)
    leads = lead_times(frame, spans[:, 0], o["horizon"])
    acc["warn"].append(ident | warning_scores(frame, len(spans), leads))
    if acc["pooling"]:
        _pool_add_warning(acc["pool"], sig.name, frame, len(spans), leads)


def _stack(items: list[dict]) -> pd.DataFrame:
    """Rows of dicts holding equal-length arrays (one per lag) and scalars (repeated) as one frame."""
    if not items:
        return pd.DataFrame()
    lengths = [len(it["lag"]) for it in items]
    cols = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        cols[key] = (
            np.concatenate(vals)
            if isinstance(vals[0], np.ndarray)
            else np.repeat(np.array(vals, dtype=object), lengths)
        )
    return pd.DataFrame(cols).infer_objects()


def _pool_add(pool, key, x, y, k, max_lag, spacing, n_boot) -> None:
    # NaN padding between runs keeps lagged pairs from straddling two runs.
    entry = pool.setdefault(key, {"x": [], "y": [], "seg": [], "spacing": spacing, "n_boot": n_boot})
    pad = np.full(max_lag, np.nan)
    entry["x"] += [x, pad]
    entry["y"] += [y, pad]
    entry["seg"] += [np.full(len(x), k), np.full(max_lag, k)]


def _pool_add_warning(pool, name, frame, n_events, leads) -> None:
    entry = pool.setdefault(("warn", name), {"frames": [], "events": 0, "leads": []})
    entry["frames"].append(frame)
    entry["events"] += n_events
    entry["leads"] += leads


def _with_pooled(out, runs, pool, o: dict) -> dict[str, pd.DataFrame]:
    """Append the pooled rows; with a single run they are the run's rows relabelled."""
    if len(runs) <= 1:
        for key, df in out.items():
            if len(df):
                out[key] = pd.concat([df, df.assign(run="pooled", method="pooled")], ignore_index=True)
        return out
    if not pool:
        return out
    corr, lags, warn = [], [], []
    for key, entry in pool.items():
        if key[0] == "warn":
            frame = pd.concat(entry["frames"], ignore_index=True)
            warn.append({"signal": key[1]} | warning_scores(frame, entry["events"], entry["leads"]))
            continue
        x, y, seg = (np.concatenate(entry[c]) for c in ("x", "y", "seg"))
        ident = {"signal": key[0], "transform": key[1]}
        corr.append(ident | correlation(x, y, segments=seg, n_boot=entry["n_boot"], seed=o["seed"]))
        lag = _lags(x, y, o["max_lag"])
        lags.append(ident | {"lag_steps": lag["lag"] * entry["spacing"]} | lag)
    meta = out["correlations"][["signal", "stat", "group"]].drop_duplicates("signal")
    pooled = {"correlations": pd.DataFrame(corr), "lags": _stack(lags), "early_warning": pd.DataFrame(warn)}
    return {
        key: pd.concat(
            [out[key], df.merge(meta, on="signal", how="left").assign(run="pooled", method="pooled")], ignore_index=True
        )
        if len(df)
        else out[key]
        for key, df in pooled.items()
    }


def ranking(result: dict[str, pd.DataFrame], run: str = "pooled") -> pd.DataFrame:
    """(signal, transform) ranked by |Spearman r| with the loss ratio, with CI, best lag and AUROC."""
    c = result["correlations"]
    if not len(c):
        return pd.DataFrame()
    c = c[c["run"] == run].copy()
    lags = result["lags"]
    lags = lags[(lags["run"] == run) & lags["r"].notna()]
    if len(lags):
        best = lags.loc[lags["r"].abs().groupby([lags["signal"], lags["transform"]]).idxmax()]
        best = best[["signal", "transform", "lag", "lag_steps", "r"]].rename(
            columns={"lag": "best_lag", "lag_steps": "best_lag_steps", "r": "r_at_best_lag"}
        )
        c = c.merge(best, on=["signal", "transform"], how="left")
    ew = result["early_warning"]
    if len(ew):
        ew = ew[ew["run"] == run][["signal", "auroc", "precision", "recall", "median_lead"]]
        c = c.merge(ew, on="signal", how="left")
    c = c.assign(abs_spearman=c["spearman_r"].abs()).sort_values("abs_spearman", ascending=False, na_position="last")
    c.insert(0, "rank", np.arange(1, len(c) + 1))
    return c.drop(columns=["abs_spearman"]).reset_index(drop=True)


def aligned(run, signal: str, transform_kind: str = "raw", source: str = "train", window: int = WINDOW) -> pd.DataFrame:
    """(step, value, loss_ratio) of one signal of one run, for scatter plots."""
    sig = next((s for s in run_signals(run) if s.name == signal), None)
    if sig is None:
        return pd.DataFrame(columns=["step", "value", "loss_ratio"])
    tgt_step, ratio, _ = target_of(run, source)
    return pd.DataFrame(
        {
            "step": sig.step,
            "value": transform(sig.x, transform_kind, window),
            "loss_ratio": align_to(sig.step, tgt_step, ratio),
        }
    )
