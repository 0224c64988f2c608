"""Rank a log's numeric columns by how well they move before its spike events.

Every column is scored raw and detrended (dlog, log_ratio_median) with the study's early-warning rule
(analysis.records.warning.early_warning, on entry positions: the horizon counts log entries), so a signal
scores the same whether it comes from a log or from gradvar records. The diagnosis adds what one log
needs: the lead in optimizer steps, the chance hit rate and its binomial p-value.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..records.warning import ALARM_Q as QUANTILE
from ..records.warning import WINDOW as BASE_WINDOW
from ..records.warning import early_warning, first_alarms, transform

SIGNAL_COLUMNS = (
    "rank",
    "signal",
    "role",
    "variant",
    "auroc",
    "hit_rate",
    "chance_hit_rate",
    "p_value",
    "precision",
    "n_events",
    "median_lead_entries",
    "median_lead_steps",
    "at_spike",
    "n_obs",
)
SCHEDULES = ("lr", "seqlen", "batch_size", "momentum", "weight_decay")
"""Set by the user, not measured: only their raw level is compared (is trouble at high LR / long sequences?)."""
# Columns that are the loss itself, a mirror of it, or a clock: not candidate early-warning signals.
_NOT_SIGNALS = (
    "loss",
    "ppl",
    "perplexity",
    "accuracy",
    "acc",
    "spike",
    "epoch",
    "tokens",
    "flos",
    "runtime",
    "per_second",
    "per_s",
    "time",
    "wall",
    "step",
)


def signal_columns(df: pd.DataFrame) -> list:
    """Numeric columns other than the loss, its mirrors and clocks, with enough finite, varying values."""
    out = []
    for col in df.columns:
        parts = set(col.split("_"))
        mirror = any(w in parts or col.endswith(w) for w in _NOT_SIGNALS) and not col.endswith("scale")
        if mirror or col in ("tokens_per_s", "batch_size"):  # an fp16 loss_scale is a signal, not a mirror
            continue
        v = df[col].to_numpy(np.float64)
        fin = v[np.isfinite(v)]
        if len(fin) >= 8 and np.ptp(fin) > 0:
            out.append(col)
    return out


def _is_schedule(col: str) -> bool:
    return col in SCHEDULES or col.startswith("lr_") or col.endswith("_lr")


def detrended(v: np.ndarray) -> dict:
    """raw, dlog (step-to-step change of the log) and log_ratio_median (log of v over its trailing median: the
    study's `lrm` over the positive entries)."""
    out = {"raw": v}
    pos = np.isfinite(v) & (v > 0)
    if pos.sum() >= 8:
        out["dlog"] = transform(v, "dlog")
        out["log_ratio_median"] = transform(np.where(pos, v, np.nan), "lrm", BASE_WINDOW)
    return out


def signal_variants(df: pd.DataFrame, entries: pd.DataFrame, spikes: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """One row per (signal, variant) with its lead-time statistics against the event onsets."""
    steps = df["step"].to_numpy(np.int64)
    in_event = entries["event"].to_numpy() > 0
    onsets = np.array([int(np.searchsorted(steps, s)) for s in spikes["start_step"]], dtype=np.int64)
    onsets = onsets[onsets > 0]  # an event at the first entry has no history to be warned by
    rows = []
    for col in signal_columns(df):
        at = [
            _relative_to_recent(df[col].to_numpy(np.float64), int(np.searchsorted(steps, s)))
            for s in spikes["peak_step"]
        ]
        at_spike = float(np.nanmedian(at)) if np.isfinite(at).any() else math.nan
        role = "schedule" if _is_schedule(col) else "measured"
        variants = detrended(df[col].to_numpy(np.float64))
        for name, v in variants.items() if role == "measured" else [("raw", variants["raw"])]:
            stats = lead_stats(v, onsets, in_event, steps, horizon)
            rows.append({"signal": col, "role": role, "variant": name, **stats, "at_spike": at_spike})
    cols = [c for c in SIGNAL_COLUMNS if c != "rank"]
    return pd.DataFrame(rows, columns=cols)


def lead_stats(v: np.ndarray, onsets: np.ndarray, in_event: np.ndarray, steps: np.ndarray, horizon: int) -> dict:
    """Hit rate, lead (entries and steps), precision and AUROC of 'v above its rolling quantile' before onsets
    (entry indices), with the chance hit rate and p-value of the hits."""
    v = np.where(np.isfinite(v), v, np.nan)
    idx = np.arange(len(v))
    frame, leads, sc = early_warning(v, idx, onsets, in_event, horizon, BASE_WINDOW, QUANTILE)
    leads_s = [int(steps[s] - steps[i]) for s, _, i in first_alarms(frame, onsets, horizon)]
    n = len(onsets)
    base = frame["alarm"].mean() if len(frame) else math.nan
    chance = 1 - (1 - base) ** horizon if n and np.isfinite(base) else math.nan
    p = math.nan
    if n and np.isfinite(chance):
        from scipy.stats import binomtest  # scipy only when there are events to test (it costs ~1 s to import)

        # How surprising the hits are if alarms fell at random at the base rate (independent entries assumed).
        p = float(binomtest(len(leads), n, min(max(chance, 0.0), 1.0), alternative="greater").pvalue)
    return {
        "auroc": sc["auroc"],
        "hit_rate": sc["recall"],
        "chance_hit_rate": chance,
        "p_value": p,
        "precision": sc["precision"],
        "n_events": n,
        "median_lead_entries": sc["median_lead"],
        "median_lead_steps": float(np.median(leads_s)) if leads_s else math.nan,
        "n_obs": sc["n_eval"],
    }


def rank_signals(variants: pd.DataFrame) -> pd.DataFrame:
    """Each signal's best variant (highest AUROC, raw first on ties), best signals first."""
    if variants.empty:
        return pd.DataFrame(columns=list(SIGNAL_COLUMNS))
    order = {"raw": 0, "dlog": 1, "log_ratio_median": 2}
    v = variants.assign(
        _a=variants["auroc"].fillna(-1.0),
        _o=variants["variant"].map(order),
        _m=(variants["role"] != "measured").astype(int),
    )
    best = v.sort_values(["signal", "_a", "_o"], ascending=[True, False, True]).groupby("signal").head(1)
    # Measured signals first: a schedule 'predicting' spikes only says when in training they happen.
    best = best.sort_values(
        ["_m", "_a", "hit_rate", "signal"], ascending=[True, False, False, True], na_position="last"
    )
    best = best.drop(columns=["_a", "_o", "_m"]).reset_index(drop=True)
    best.insert(0, "rank", np.arange(1, len(best) + 1))
    return best.loc[:, list(SIGNAL_COLUMNS)]


def _relative_to_recent(v: np.ndarray, i: int, window: int = 20) -> float:
    """v[i] / median of the finite v over the previous `window` entries (NaN without history)."""
    prev = v[max(0, i - window) : i]
    prev = prev[np.isfinite(prev)]
    if not len(prev) or not np.isfinite(v[i]) or np.median(prev) <= 0:
        return math.nan
    return float(v[i] / np.median(prev))
