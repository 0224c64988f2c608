"""Correlations within one LR level, and the common early window of the arms.

Across LRs every signal grows with the LR and so does the spike, so a pooled correlation measures the LR.
Within one LR the runs differ only by arm and seed. The signals are ones gradient clipping does not pin: the
pre-clip gradient norm and the gradient-noise columns (tr(Σ), B_simple, the element-wise variance maximum),
not Adam's state, which under clipping sees a gradient of norm at most the clip.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

SIGNALS = ("grad_norm", "grad_noise_scale", "grad_trace_sigma", "grad_var_max")
"""Early signals (each run's maximum over the common early window; NaN rows, steps where a signal is not
sampled, are skipped)."""
MIN_RUNS = 4
"""Fewer runs at one LR give no correlation (Spearman of 3 points takes 4 values)."""


def common_window(runs: list[dict]) -> tuple[int, int]:
    """(1, end): one early window for every arm. `runs`: dicts with last_step, warmup_steps and slw_steps (0
    without SLW). end = the longest of 2 x LR warmup and the SLW duration over the arms, cut at the shortest
    run's last step: every arm's transient lies inside it and every arm has data up to its end."""
    if not runs:
        return 1, 1
    reach = max(max(2 * int(r.get("warmup_steps") or 0), int(r.get("slw_steps") or 0)) for r in runs)
    shortest = min(int(r["last_step"]) for r in runs)
    return 1, max(1, min(reach, shortest))


def early_max(steps: pd.DataFrame, col: str, end: int) -> float:
    """The largest finite value of `col` at steps <= end (NaN when none)."""
    if col not in steps:
        return math.nan
    s = steps[steps["step"] <= end]
    v = pd.to_numeric(s[col], errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.max()) if len(v) else math.nan


def within_lr_spearman(df: pd.DataFrame, x: str, y: str = "peak_ratio") -> pd.DataFrame:
    """Spearman rho of x with y at each LR (one row per run in df, columns lr, x, y): lr, n, rho. Runs with a
    NaN in x or y are left out; an LR with fewer than MIN_RUNS runs, or a constant column, gives rho NaN."""
    rows = []
    for lr, g in df.groupby("lr", sort=True):
        g = g[np.isfinite(g[x].astype(float)) & np.isfinite(g[y].astype(float))]
        rho = math.nan
        if len(g) >= MIN_RUNS and g[x].nunique() > 1 and g[y].nunique() > 1:
            rho = float(spearmanr(g[x], g[y]).statistic)
        rows.append({"lr": float(lr), "signal": x, "n": len(g), "rho": rho})
    return pd.DataFrame(rows)
