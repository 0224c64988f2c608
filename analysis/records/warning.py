"""Early warning: does a signal rising above its recent quantiles announce a loss spike?

The alarm rule, its per-step scores, lead times and the one Mann-Whitney AUROC of the package (analysis.correlate
and analysis.diagnose.signals both score with it, so their AUROCs agree by construction). The rolling quantile
and the average ranks that the rule rests on live here too, although analysis.correlate also uses them for its
transforms and Spearman r: this module is the lower layer and imports nothing from analysis.correlate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from .signals import in_spans

WINDOW = 50
EXACT_MAX = 200_000
"""Series longer than this refresh their rolling median/quantile every ceil(n / 50k) steps instead of every
step (a threshold at most that many steps stale): pandas' exact rolling quantile costs ~0.3 s per 1 M points."""
HORIZON = 10
"""Early warning: a spike starting within this many steps after an alarm counts as warned."""
ALARM_Q = 0.95
"""Early warning: alarm when the signal exceeds this quantile of its previous WINDOW values."""


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
    are present. `score` must be finite: both callers drop non-finite entries first."""
    score, label = np.asarray(score, dtype=np.float64), np.asarray(label, dtype=bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = _rank(score)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def warning_frame(
    x, steps, spans, horizon: int = HORIZON, window: int = WINDOW, q: float = ALARM_Q, thr=None
) -> pd.DataFrame:
    """Per step: score, alarm and label of the early-warning rule (steps inside spikes dropped).

    `thr` (the rolling q-quantile of the previous window) may be passed in when already computed."""
    x = np.asarray(x, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.int64)
    thr = rolling_prev(x, window, q) if thr is None else thr
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (x - thr) / np.abs(thr)
    starts = spans[:, 0] if len(spans) else np.zeros(0, np.int64)
    i = np.searchsorted(starts, steps, side="right")
    if len(starts):
        label = (i < len(starts)) & (starts[np.minimum(i, len(starts) - 1)] <= steps + horizon)
    else:
        label = np.zeros(len(steps), bool)
    keep = np.isfinite(score) & ~in_spans(steps, spans)
    return pd.DataFrame({"step": steps[keep], "score": score[keep], "alarm": score[keep] > 0, "label": label[keep]})


def lead_times(frame: pd.DataFrame, starts, horizon: int = HORIZON) -> list[int]:
    """For each spike start with an alarm in [start - h, start - 1]: start - the first such alarm."""
    alarm_steps = frame["step"].to_numpy(np.int64)[frame["alarm"].to_numpy(bool)]
    leads = []
    for s in np.asarray(starts):
        j = np.searchsorted(alarm_steps, s - horizon)  # first alarm at or after s - h ...
        if j < len(alarm_steps) and alarm_steps[j] < s:  # ... and strictly before the spike
            leads.append(int(s - alarm_steps[j]))
    return leads


def warning_scores(frame: pd.DataFrame, n_events: int, leads: list[int]) -> dict:
    """AUROC, step precision, event recall and median lead time of one (or a pooled) warning frame."""
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
