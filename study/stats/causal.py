"""The causal 2 x 2 test, from disk: per branch arm the outcomes over its continuation, per block (one source
run at one checkpoint step, holding its four arms) the paired effects of length at equal tokens per step, of
tokens per step at equal length, and their interaction, with intervals by a bootstrap over blocks.

    length effect       = mean over token levels of (full - short)
    tokens effect       = mean over lengths of (high - low)
    interaction         = (full-high - short-high) - (full-low - short-low)

Variance-like outcomes (bias-corrected Adam variance max, update RMS) enter as natural logs, so an effect is a
log ratio; the probe-loss change and the attention-logit max enter as they are.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.records.load import load_run

from .bootstrap import run_bootstrap

ARMS = ("short-low", "full-low", "short-high", "full-high")
OUTCOMES = {
    "log_vhat_max": "log max bias-corrected Adam variance (adam_vhat_max)",
    "log_update_rms": "log max update RMS",
    "max_attn_logit": "max attention logit",
    "probe_loss_change": "probe loss change over the branch",
}
"""Outcome column -> what it is."""


def _col_max(steps: pd.DataFrame, col: str) -> float:
    v = pd.to_numeric(steps.get(col, pd.Series(dtype=float)), errors="coerce")
    v = v[np.isfinite(v)]
    return float(v.max()) if len(v) else math.nan


def _probe_at(steps: pd.DataFrame, step: int) -> float:
    if "probe_loss" not in steps:
        return math.nan
    v = steps.loc[steps["step"] == step, "probe_loss"].dropna()
    return float(v.iloc[0]) if len(v) else math.nan


def arm_rows(runs_root: Path, records: list[dict]) -> pd.DataFrame:
    """One row per branch arm: seed, step, arm and the outcomes (NaN where the arm has not finished)."""
    rows, sources = [], {}
    for r in records:
        path = Path(runs_root) / r["dir"]
        if not (path / "summary.json").exists():
            continue
        steps = load_run(path).table("steps")
        src = sources.setdefault(r["source"], load_run(Path(runs_root) / r["source"]).table("steps"))
        probe = steps["probe_loss"].dropna() if "probe_loss" in steps else pd.Series(dtype=float)
        vhat, upd = _col_max(steps, "adam_vhat_max"), _col_max(steps, "update_rms")
        rows.append(
            {
                "seed": r["seed"],
                "step": r["step"],
                "arm": r["arm"],
                "log_vhat_max": math.log(vhat) if vhat > 0 else math.nan,
                "log_update_rms": math.log(upd) if upd > 0 else math.nan,
                "max_attn_logit": _col_max(steps, "max_attn_logit"),
                "probe_loss_change": (float(probe.iloc[-1]) if len(probe) else math.nan) - _probe_at(src, r["step"]),
            }
        )
    return pd.DataFrame(rows)


def block_effects(arms: pd.DataFrame) -> pd.DataFrame:
    """One row per (block, outcome, effect) for the blocks that have all four arms."""
    out = []
    for (seed, step), g in arms.groupby(["seed", "step"]):
        by = g.set_index("arm")
        if not set(ARMS) <= set(by.index):
            continue
        for col in OUTCOMES:
            v = by[col]
            effects = {
                "length": ((v["full-low"] - v["short-low"]) + (v["full-high"] - v["short-high"])) / 2,
                "tokens": ((v["short-high"] - v["short-low"]) + (v["full-high"] - v["full-low"])) / 2,
                "interaction": (v["full-high"] - v["short-high"]) - (v["full-low"] - v["short-low"]),
            }
            out += [{"seed": seed, "step": step, "outcome": col, "effect": k, "value": x} for k, x in effects.items()]
    return pd.DataFrame(out, columns=["seed", "step", "outcome", "effect", "value"])


def effect_table(effects: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Mean effect over blocks with a 95% bootstrap interval over blocks, per (outcome, effect)."""
    rows = []
    for (outcome, effect), g in effects.groupby(["outcome", "effect"], sort=False):
        vals = [float(x) for x in g["value"] if np.isfinite(x)]
        iv = run_bootstrap(vals, lambda xs: float(np.mean(xs)), n_boot=n_boot)
        rows.append(
            {
                "outcome": outcome,
                "effect": effect,
                "mean": iv.estimate,
                "low": iv.low,
                "high": iv.high,
                "n_blocks": iv.n_runs,
            }
        )
    return pd.DataFrame(rows, columns=["outcome", "effect", "mean", "low", "high", "n_blocks"])


PROBE_COLS = ("grad_trace_sigma", "grad_trace_sigma_per_token", "grad_sq_max", "grad_sq_max_micro")


def probe_by_length(runs_root: Path, sources: list[str], steps: list[int], n_boot: int = 2000) -> pd.DataFrame:
    """The sequence-length probe (equal tokens per length) of the source runs at the branch steps: per length
    and statistic, the median over (run, step) and a bootstrap interval over runs of the runs' medians."""
    frames = []
    for name in sources:
        p = load_run(Path(runs_root) / name).table("probes")
        if len(p):
            frames.append(p[p["step"].isin(steps)].assign(run=name))
    if not frames:
        return pd.DataFrame()
    probes = pd.concat(frames, ignore_index=True)
    rows = []
    for length, g in probes.groupby("probe_seqlen"):
        row = {
            "probe_seqlen": int(length),
            "probe_tokens": int(g["probe_tokens"].median()),
            "n_runs": g["run"].nunique(),
        }
        for col in PROBE_COLS:
            if col not in g:
                row[col] = row[f"{col}_low"] = row[f"{col}_high"] = math.nan
                continue
            per_run = [float(v) for v in g.groupby("run")[col].median() if np.isfinite(v)]
            iv = run_bootstrap(per_run, lambda xs: float(np.median(xs)), n_boot=n_boot)
            row.update({col: float(g[col].median()), f"{col}_low": iv.low, f"{col}_high": iv.high})
        rows.append(row)
    return pd.DataFrame(rows)
