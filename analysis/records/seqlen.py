"""Gradient variance by sequence length, early versus late in training.

Two sources:
* the sequence-length probe (`probes` table): at the same step and on the same held-out tokens (cut into
  pieces of each length), tr(Σ) per piece, tr(Σ)·length per token, `grad_sq_max` (the largest squared
  coordinate of the mean gradient, what Adam's v takes in) and `grad_sq_max_micro` (the largest per-coordinate
  second moment of the micro-batch gradients) for each length — a controlled comparison. Records written
  before these columns carry `adam_v_max_if_applied` instead, which is not read (it was ~beta2 times the
  optimizer state at every length);
* SLW step tags (`steps` grouped by `seqlen`): what training actually saw. Under SLW the length is
  confounded with training time (short lengths come first), so this one is descriptive only.

Windows follow the LR schedule: "early" is every step up to WARMUP_FACTOR (3) times the run's warmup steps
(config.json's optim.warmup_steps; `warmup_by_run`), the warmup and the steps right after its LR peak, where
the claim is about; "late" is the last quarter of the run's steps and "middle" the rest. A run whose warmup is
unknown (absent, or 0) falls back to the first quarter of its steps for "early", and the tables say which rule
each run's windows used (`early_rule`).

The paper's claim, made testable: "longer sequences give larger extreme gradient variance early in
training". `seqlen_hypothesis` reports the Spearman correlation of probe length and the variance in the
early and the late window, the fold change from the shortest to the longest length and the share of probe
steps where the longest length had the larger value, whatever direction that shows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

PROBE_STATS = (
    "grad_trace_sigma",
    "grad_trace_sigma_per_token",
    "grad_sq_max",
    "grad_sq_max_micro",
    "grad_norm",
    "loss",
)
HEADLINE_STAT = "grad_sq_max"
"""The probe statistic the report's seqlen finding and claim state."""
HYPOTHESIS_STATS = ("grad_sq_max", "grad_sq_max_micro", "grad_trace_sigma", "grad_trace_sigma_per_token")
STEP_STATS = ("grad_trace_sigma", "grad_var_max", "adam_v_max", "grad_norm", "loss")
EARLY_FRAC = 0.25
WARMUP_FACTOR = 3
ALPHA = 0.05


def training_window(step, last_step, early_frac: float = EARLY_FRAC, early_until=None) -> np.ndarray:
    """'early' (steps <= early_until where finite, else the first early_frac of the run), 'late' (the last
    early_frac, where not early) or 'middle'."""
    step = np.asarray(step, dtype=np.float64)
    last = np.asarray(last_step, dtype=np.float64)
    until = np.broadcast_to(np.nan if early_until is None else np.asarray(early_until, dtype=np.float64), step.shape)
    early = np.where(np.isfinite(until), step <= until, step <= early_frac * last)
    return np.where(early, "early", np.where(step > (1 - early_frac) * last, "late", "middle"))


def warmup_by_run(runs) -> dict:
    """Run name -> its configured LR warmup steps (config.json optim.warmup_steps), None where unknown."""
    out = {}
    for r in runs:
        w = ((r.config or {}).get("optim") or {}).get("warmup_steps")
        out[r.name] = int(w) if isinstance(w, (int, float)) and np.isfinite(w) and w > 0 else None
    return out


def early_rule(warmup, early_frac: float = EARLY_FRAC) -> str:
    """How a run's early window was chosen, said in words."""
    if warmup:
        return f"steps <= {WARMUP_FACTOR} x warmup = {WARMUP_FACTOR * int(warmup)}"
    return f"first {early_frac:.0%} of steps (warmup unknown)"


def _with_window(df: pd.DataFrame, early_frac: float, last_steps: dict | None, warmup: dict | None) -> pd.DataFrame:
    df = df if "run" in df.columns else df.assign(run="run")
    run = df["run"].astype(str)
    last = df.groupby("run", observed=True)["step"].transform("max")
    if last_steps:
        last = run.map(last_steps).fillna(last)
    w = run.map(warmup or {}).astype("float64")
    window = training_window(df["step"], last, early_frac, WARMUP_FACTOR * w)
    rule = w.map(lambda v: early_rule(v if np.isfinite(v) else None, early_frac))
    return df.assign(run=run, window=window, early_rule=rule)


def probe_variance_by_length(
    probes: pd.DataFrame,
    early_frac: float = EARLY_FRAC,
    last_steps: dict | None = None,
    warmup_steps: dict | None = None,
) -> pd.DataFrame:
    """Median of each probe statistic per (run, window, probe_seqlen), plus 'all' windows."""
    if not len(probes):
        return pd.DataFrame(columns=["run", "window", "probe_seqlen", "n"] + list(PROBE_STATS))
    return _medians(_with_window(probes, early_frac, last_steps, warmup_steps), "probe_seqlen", PROBE_STATS)


def step_variance_by_seqlen(
    steps: pd.DataFrame, early_frac: float = EARLY_FRAC, warmup_steps: dict | None = None
) -> pd.DataFrame:
    """Median of each step statistic per (run, window, trained seqlen) — SLW's step tags."""
    if not len(steps):
        return pd.DataFrame(columns=["run", "window", "seqlen", "n"] + list(STEP_STATS))
    return _medians(_with_window(steps, early_frac, None, warmup_steps), "seqlen", STEP_STATS)


def _medians(df: pd.DataFrame, length: str, stats_: tuple) -> pd.DataFrame:
    """Median of each statistic per (run, window, length), plus window 'all'."""
    cols = [c for c in stats_ if c in df.columns]
    parts = []
    for keys, window in ((["run", "window", length], None), (["run", length], "all")):
        g = df.groupby(keys, observed=True)
        part = g[cols].median().join(g.size().rename("n")).reset_index()
        parts.append(part if window is None else part.assign(window=window))
    return pd.concat(parts, ignore_index=True)[["run", "window", length, "n"] + cols]


def _window_test(df: pd.DataFrame, stat: str) -> dict:
    """Spearman of probe_seqlen vs stat, fold change and per-step consistency in one window."""
    d = df[["step", "probe_seqlen", stat]].replace([np.inf, -np.inf], np.nan).dropna()
    out = {"n": len(d), "n_probe_steps": int(d["step"].nunique()) if len(d) else 0}
    if len(d) < 3 or d["probe_seqlen"].nunique() < 2:
        return out | {
            "spearman_rho": np.nan,
            "p_value": np.nan,
            "fold_change": np.nan,
            "frac_steps_longer_larger": np.nan,
        }
    rho, p = stats.spearmanr(d["probe_seqlen"], d[stat])
    med = d.groupby("probe_seqlen")[stat].median()
    fold = med.iloc[-1] / med.iloc[0] if med.iloc[0] != 0 else np.nan
    # Within each probe step (same model, same data) compare the longest length with the shortest.
    ends = d.sort_values("probe_seqlen").groupby("step")[stat].agg(["first", "last", "size"])
    ends = ends[ends["size"] >= 2]
    frac = float((ends["last"] > ends["first"]).mean()) if len(ends) else np.nan
    return out | {
        "spearman_rho": float(rho),
        "p_value": float(p),
        "fold_change": float(fold),
        "frac_steps_longer_larger": frac,
    }


def _verdict(window: str, rho: float, p: float, alpha: float) -> str:
    if not np.isfinite(rho) or not np.isfinite(p):
        return "no data"
    if p >= alpha:
        return "no significant trend"
    direction = "longer → larger" if rho > 0 else "longer → smaller"
    if window != "early":
        return direction
    return f"{direction}: hypothesis {'supported' if rho > 0 else 'contradicted'}"


def seqlen_hypothesis(
    probes: pd.DataFrame,
    stat: str = HEADLINE_STAT,
    early_frac: float = EARLY_FRAC,
    alpha: float = ALPHA,
    last_steps: dict | None = None,
    warmup_steps: dict | None = None,
) -> pd.DataFrame:
    """Test "longer probe length → larger `stat` early in training", per run and pooled, early and late.

    The pooled Spearman p-value treats the rows of one probe step as independent (they share the model), so
    read it with the per-step consistency `frac_steps_longer_larger` beside it.
    """
    cols = [
        "run",
        "window",
        "stat",
        "n",
        "n_probe_steps",
        "spearman_rho",
        "p_value",
        "fold_change",
        "frac_steps_longer_larger",
        "verdict",
        "early_rule",
    ]
    if not len(probes) or stat not in probes.columns:
        return pd.DataFrame(columns=cols)
    df = _with_window(probes, early_frac, last_steps, warmup_steps)
    rows = []
    groups = [(run, g) for run, g in df.groupby("run", observed=True)]
    if len(groups) > 1:
        # Pool by probe step within runs: distinct (run, step) pairs stay distinct steps.
        groups.append(("pooled", df.assign(step=df["run"] + ":" + df["step"].astype(str))))
    for run, g in groups:
        for window in ("early", "late"):
            res = _window_test(g[g["window"] == window], stat)
            rows.append(
                {"run": run, "window": window, "stat": stat}
                | res
                | {"verdict": _verdict(window, res.get("spearman_rho", np.nan), res.get("p_value", np.nan), alpha)}
                | {"early_rule": "; ".join(sorted(g["early_rule"].unique()))}
            )
    return pd.DataFrame(rows, columns=cols)


def state_seqlen_finding(hypothesis: pd.DataFrame, run: str | None = None) -> str:
    """One sentence per window stating direction and strength of the length/variance relation."""
    if not len(hypothesis):
        return "Sequence-length probe: no probe data, so the length/variance hypothesis was not tested."
    h = hypothesis
    run = run or ("pooled" if (h["run"] == "pooled").any() else h["run"].iloc[0])
    h = h[h["run"] == run]
    parts = []
    for _, r in h.iterrows():
        if not np.isfinite(r["spearman_rho"]):
            parts.append(f"{r['window']} window: not enough probe data")
            continue
        parts.append(
            f"{r['window']} window: Spearman ρ = {r['spearman_rho']:+.2f} (p = {r['p_value']:.2g}, "
            f"n = {r['n']} over {r['n_probe_steps']} probe steps), longest/shortest median = "
            f"{r['fold_change']:.2f}×, longest larger in {r['frac_steps_longer_larger']:.0%} of probe "
            f"steps → {r['verdict']}"
        )
    stat = h["stat"].iloc[0] if len(h) else "?"
    rule = f" Early window: {h['early_rule'].iloc[0]}." if len(h) and "early_rule" in h.columns else ""
    return (
        f'Hypothesis "longer probe length → larger {stat} early in training" ({run}): ' + "; ".join(parts) + "." + rule
    )
