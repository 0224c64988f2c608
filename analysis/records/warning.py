"""Early warning: does a signal rising above its recent quantiles announce a loss spike?

One rule for the study's report and for `gradvar diagnose`, as pure functions on arrays:
- alarm at position t when x_t exceeds the q-quantile of its previous `window` values (`rolling_prev`, at
  least window // 4 of them); the score is x_t / quantile - 1, so the alarm is score > 0;
- positive at t when an event starts in (t, t + horizon]; positions inside events, and those without a
  quantile yet, are left out;
- AUROC of the score (Mann-Whitney, ties one half), precision per alarm, recall per event, and the lead of an
  event: its start minus the first alarm in [start - horizon, start - 1].
Positions are whatever axis the caller has: optimizer steps for a records signal, entry indices for a log
(its horizon then counts entries). The rolling quantile and the ranks also serve the correlations' `lrm`
transform and Spearman r (analysis.records.correlate).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from ..defaults import ALARM_Q, HORIZON, WINDOW

EXACT_MAX = 200_000
"""Series longer than this refresh their rolling median/quantile every ceil(n / 50k) steps instead of every
step (a threshold at most that many steps stale): pandas' exact rolling quantile costs ~0.3 s per 1 M points."""
TRANSFORMS = ("raw", "dlog", "lrm")


def rolling_prev(x, window: int = WINDOW, q=0.5) -> np.ndarray:
    """The q-quantile(s) of the previous `window` values at each position (min_periods window // 4; NaN
    before). A scalar q gives shape (n,), a sequence of k quantiles (k, n) from one pass."""
    x = np.asarray(x, dtype=np.float64)
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    n, min_periods = len(x), max(2, window // 4)
    lead = int(np.argmax(~np.isnan(x))) if n else 0
    if lead and n > EXACT_MAX:  # a NaN prefix (a smoothed signal's start) holds no values: roll over the rest
        out = np.full((len(qs), n), np.nan)
        out[:, lead:] = rolling_prev(x[lead:], window, qs)
        return out[0] if np.ndim(q) == 0 else out
    if n <= EXACT_MAX or not np.isfinite(x).all():
        roll = pd.Series(x).shift(1).rolling(window, min_periods=min_periods)
        out = np.stack([(roll.median() if v == 0.5 else roll.quantile(v)).to_numpy() for v in qs])
    else:
        stride = math.ceil(n / (EXACT_MAX // 4))
        out = np.empty((len(qs), n))
        out[:, :window] = rolling_prev(x[:window], window, qs)  # the partial windows at the start
        k = np.arange(0, n - window, stride)  # window x[k : k + window] serves positions k + window .. + stride - 1
        vals = np.quantile(sliding_window_view(x[: n - 1], window)[k], qs, axis=1)
        out[:, window:] = vals[:, (np.arange(window, n) - window) // stride]
    return out[0] if np.ndim(q) == 0 else out


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


def _rank(a: np.ndarray) -> np.ndarray:
    """Average ranks (as scipy.stats.rankdata); the argsort shortcut when there are no ties."""
    order = np.argsort(a)
    srt = a[order]
    if len(a) > 1 and np.any(srt[1:] == srt[:-1]):
        from scipy import stats  # only with ties; importing scipy costs ~1 s

        return stats.rankdata(a)
    r = np.empty(len(a))
    r[order] = np.arange(1, len(a) + 1)
    return r


def auroc(score, label) -> float:
    """Mann-Whitney AUROC of `score` for the boolean `label` (ties count one half); NaN unless both classes
    are present. `score` must be finite (warning_frame keeps only finite scores)."""
    score, label = np.asarray(score, dtype=np.float64), np.asarray(label, dtype=bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = _rank(score)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def warning_frame(
    x, t, onsets, excluded=None, horizon: int = HORIZON, window: int = WINDOW, q: float = ALARM_Q, thr=None
) -> pd.DataFrame:
    """Per position: its index, position t, score, alarm and label of the rule; positions `excluded` (inside
    events) and those without a finite score left out. `thr`, the rolling q-quantile of the previous window,
    may be passed in when already computed."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.int64)
    thr = rolling_prev(x, window, q) if thr is None else thr
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (x - thr) / np.abs(thr)
    starts = np.sort(np.asarray(onsets, dtype=np.int64))
    label = np.zeros(len(t), bool)
    if len(starts):
        i = np.searchsorted(starts, t, side="right")  # the first event start after t, within the horizon
        label = (i < len(starts)) & (starts[np.minimum(i, len(starts) - 1)] <= t + horizon)
    keep = np.isfinite(score)
    if excluded is not None:
        keep &= ~np.asarray(excluded, dtype=bool)
    return pd.DataFrame(
        {
            "index": np.flatnonzero(keep),
            "t": t[keep],
            "score": score[keep],
            "alarm": score[keep] > 0,
            "label": label[keep],
        }
    )


def first_alarms(frame: pd.DataFrame, onsets, horizon: int = HORIZON) -> list[tuple[int, int, int]]:
    """(onset, position, index) of each onset's first alarm in [onset - h, onset - 1], for the onsets with one."""
    alarms = frame["alarm"].to_numpy(bool)
    alarm_t, alarm_i = frame["t"].to_numpy(np.int64)[alarms], frame["index"].to_numpy(np.int64)[alarms]
    out = []
    for s in np.asarray(onsets, dtype=np.int64):
        j = np.searchsorted(alarm_t, s - horizon)  # first alarm at or after s - h ...
        if j < len(alarm_t) and alarm_t[j] < s:  # ... and strictly before the event
            out.append((int(s), int(alarm_t[j]), int(alarm_i[j])))
    return out


def lead_times(frame: pd.DataFrame, onsets, horizon: int = HORIZON) -> list[int]:
    """For each event start with an alarm in [start - h, start - 1]: start - the first such alarm."""
    return [s - a for s, a, _ in first_alarms(frame, onsets, horizon)]


def warning_scores(frame: pd.DataFrame, n_events: int, leads: list[int]) -> dict:
    """AUROC, precision per alarm, recall per event and median lead of one (or a pooled) warning frame."""
    label, alarm = frame["label"].to_numpy(bool), frame["alarm"].to_numpy(bool)
    return {
        "auroc": auroc(frame["score"].to_numpy(np.float64), label),
        "n_eval": len(frame),
        "n_positive": int(label.sum()),
        "n_alarms": int(alarm.sum()),
        "precision": float(label[alarm].mean()) if alarm.any() else np.nan,
        "n_events": n_events,
        "n_detected": len(leads),
        "recall": len(leads) / n_events if n_events else np.nan,
        "median_lead": float(np.median(leads)) if leads else np.nan,
    }


def early_warning(
    x, t, onsets, excluded=None, horizon: int = HORIZON, window: int = WINDOW, q: float = ALARM_Q, thr=None
) -> tuple[pd.DataFrame, list[int], dict]:
    """The rule applied to one series: (frame, leads, scores). Both the study and `gradvar diagnose` call this."""
    frame = warning_frame(x, t, onsets, excluded, horizon, window, q, thr)
    leads = lead_times(frame, onsets, horizon)
    return frame, leads, warning_scores(frame, len(onsets), leads)
