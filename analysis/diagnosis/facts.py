"""Plain numbers about a run (LR schedule, grad norm, eval trend, noise level, its kind) for advice and summary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradvar.spikes import SpikeRule

from ..logs import LogData
from .kind import run_kind

LATE_START_STEP = 100
"""A log whose first step is past this (and past two logging intervals) continues an earlier run: its first
step may be a resume the log does not mark."""


def collect_facts(
    log: LogData, entries: pd.DataFrame, spikes: pd.DataFrame, signals: pd.DataFrame, rule: SpikeRule, ctx=None
) -> dict:
    """Plain numbers about the run (LR schedule, grad norm, eval trend, noise level) for advice and summary."""
    df, x = log.df, log.df["loss"].to_numpy(np.float64)
    fin = x[np.isfinite(x)]
    ratio = entries["loss_ratio"].to_numpy()
    late = fin[len(fin) // 2 :]
    f = {
        "n_entries": len(df),
        "first_step": int(df["step"].iloc[0]),
        "last_step": int(df["step"].iloc[-1]),
        "interval": log.interval,
        "fmt": log.fmt,
        "ratio_threshold": rule.ratio_threshold,
        "min_rise": rule.min_rise,
        "near_zero": bool(len(late) and np.median(late) < 0.1 and (fin >= 0).all()),
        "median_loss_late": float(np.median(late)) if len(late) else math.nan,
        "naive_fire_frac": float(np.mean(ratio[np.isfinite(ratio)] > rule.ratio_threshold)) if len(df) else 0.0,
        "loss_decimals": _decimals(fin),
        "batch_size": log.meta.get("train_batch_size"),
        "epochs": log.meta.get("epoch", float(df["epoch"].max()) if "epoch" in df else None),
    }
    finite_ratio = np.where(np.isfinite(ratio), ratio, np.nan)
    if np.isfinite(finite_ratio).any():
        i = int(np.nanargmax(finite_ratio))
        f["max_ratio"], f["max_ratio_step"] = float(finite_ratio[i]), int(df["step"].iloc[i])
    bad = ~np.isfinite(x)
    f["first_nonfinite_step"] = int(df["step"][bad].iloc[0]) if bad.any() else None
    f["recovered_after_nonfinite"] = bool(bad.any() and np.isfinite(x[-1]))
    f.update(_lr_facts(df))
    f.update(_grad_facts(df, spikes))
    f.update(_eval_facts(log.eval_df))
    ctx = ctx or {}
    f.update(ctx)
    f["run_kind"] = run_kind(
        df, log.fmt, log.eval_df, ctx.get("vocab_size"), ctx.get("vocab_source"), ctx.get("language_model")
    )
    f["resume_steps"] = list(log.meta.get("resume_steps", []))
    f["late_start_step"] = _late_start(f["first_step"], log.interval, f["resume_steps"])
    measured = signals[signals["role"] == "measured"]
    f["top_signal"] = measured.iloc[0].to_dict() if len(measured) else None
    f["columns"] = _column_facts(df, ("grad_norm", "adam_v_max", "adam_v_l1", "update_rms"))
    wanted = ("grad_norm", "lr", "adam_v_max", "adam_v_l1", "grad_noise_scale", "seqlen")
    f["missing_signals"] = [c for c in wanted if c not in df or not np.isfinite(df[c].to_numpy(np.float64)).any()]
    return f


def _column_facts(df: pd.DataFrame, names) -> dict:
    """Median, max (and its step) and the count of NaN/inf entries of each named column the log has."""
    out = {}
    for c in names:
        if c not in df:
            continue
        v = df[c].to_numpy(np.float64)
        ok = np.isfinite(v)
        if not ok.any():
            continue
        i = int(np.flatnonzero(ok)[np.argmax(v[ok])])
        out[c] = {
            "median": float(np.median(v[ok])),
            "max": float(v[i]),
            "max_step": int(df["step"].iloc[i]),
            "n_nonfinite": int((~ok).sum()),
        }
    return out


def _late_start(first: int, interval: float, resumes: list):
    """The first step when the log starts mid-run (a possible unmarked resume), else None."""
    late = first > max(LATE_START_STEP, 2 * max(interval, 1.0) + 1)
    return first if late and first not in resumes else None


def _decimals(v: np.ndarray):
    """How many decimals the logged losses were rounded to (None if not visibly rounded)."""
    v = v[np.isfinite(v)]
    for d in range(1, 7):
        if len(v) >= 5 and np.all(np.abs(v * 10**d - np.round(v * 10**d)) < 1e-6 * np.maximum(1, np.abs(v * 10**d))):
            return d
    return None


def _lr_facts(df: pd.DataFrame) -> dict:
    if "lr" not in df or not np.isfinite(df["lr"].to_numpy(np.float64)).any():
        return {"peak_lr": None}
    lr, steps = df["lr"].to_numpy(np.float64), df["step"].to_numpy()
    peak = float(np.nanmax(np.where(np.isfinite(lr), lr, np.nan)))
    reach = np.flatnonzero(np.nan_to_num(lr) >= (1 - 1e-6) * peak)  # warmup ends where the LR first peaks
    first = lr[np.isfinite(lr)][0]
    return {
        "peak_lr": peak,
        "warmup_end_step": int(steps[reach[0]]) if len(reach) else None,
        "warmup_visible": bool(first < 0.5 * peak),
        "lr_first": float(first),
        "lr_last": float(lr[-1]),
    }


def _grad_facts(df: pd.DataFrame, spikes: pd.DataFrame) -> dict:
    if "grad_norm" not in df:
        return {"has_grad_norm": False}
    g, x, steps = df["grad_norm"].to_numpy(np.float64), df["loss"].to_numpy(np.float64), df["step"].to_numpy()
    fin = g[np.isfinite(g)]
    med = float(np.median(fin)) if len(fin) else math.nan
    nan_steps = [int(s) for s in steps[~np.isfinite(g) & np.isfinite(x)]]
    big = np.isfinite(g) & (g > 5 * med) if np.isfinite(med) and med > 0 else np.zeros(len(g), bool)
    rel = spikes.loc[spikes["kind"] != "nonfinite", "grad_norm_rel"].to_numpy(np.float64)
    return {
        "has_grad_norm": True,
        "grad_norm_median": med,
        "nan_grad_steps": nan_steps,
        "grad_spike_steps": [int(s) for s in steps[big]],
        "grad_spike_max": float(g[big].max()) if big.any() else None,
        "grad_spike_max_step": int(steps[big][np.argmax(g[big])]) if big.any() else None,
        "grad_at_spikes": float(np.nanmedian(rel)) if np.isfinite(rel).any() else None,
    }


def _eval_facts(ev) -> dict:
    """Trend of up to three eval metrics (eval_loss first): first and last value, better or worse."""
    if ev is None or ev.empty:
        return {"evals": [], "eval_improved": None}
    skip = ("runtime", "per_second", "tokens", "epoch", "step", "flos")
    cols = sorted((c for c in ev.columns if not any(w in c for w in skip)), key=lambda c: (c != "eval_loss", c))
    out = []
    for metric in cols[:3]:
        v = ev[metric].to_numpy(np.float64)
        v = v[np.isfinite(v)]
        if len(v) < 2:
            continue
        up = any(w in metric for w in ("acc", "bleu", "f1", "rouge", "exact", "score"))  # higher is better
        d = np.diff(v) if up else -np.diff(v)
        out.append(
            {
                "metric": metric,
                "first": float(v[0]),
                "last": float(v[-1]),
                "n": int(len(v)),
                "improved": bool(d.sum() > 0),
                "monotone": bool((d >= 0).all()),
            }
        )
    return {"evals": out, "eval_improved": out[0]["improved"] if out else None}
