"""Baseline versus SLW (or any methods): stability, final quality, cost to reach a target, stability grid.

Spike comparisons across methods use the probe loss (fixed full-length held-out batch) where it exists: a
short-sequence training loss is higher by construction, so training-loss ratios of SLW and baseline are not
comparable. Both are reported.

Target validation loss (default): the worst of the methods' best validation losses, where a method's best
is the level every one of its runs reaches (the max over its runs of each run's minimum). So every run
reaches the default target and every method has a time to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import DEFAULT_RULE, RECOVER_FACTOR, run_metrics, wall_time

CLASS_ORDER = ("stable", "spiky", "diverged")
SUMMARY_METRICS = (
    "spike_events",
    "max_loss_ratio",
    "probe_spike_events",
    "probe_max_loss_ratio",
    "final_val_loss",
    "final_val_ppl",
    "best_val_loss",
    "tokens_to_target",
    "time_to_target_s",
    "tokens",
    "wall_time_s",
)


def _evals(run) -> pd.DataFrame:
    e = run.evals
    if not len(e) or "val_loss" not in e:
        return pd.DataFrame(columns=["step", "tokens", "val_loss", "val_ppl", "time_s"])
    return e.sort_values("step")


def val_summary(run) -> dict:
    """Final and best validation loss, final perplexity."""
    e = _evals(run)
    fin = e[np.isfinite(e["val_loss"].astype(float))] if len(e) else e
    if not len(e):
        return {"final_val_loss": np.nan, "final_val_ppl": np.nan, "best_val_loss": np.nan}
    last = e.iloc[-1]
    ppl = float(last["val_ppl"]) if "val_ppl" in e and pd.notna(last["val_ppl"]) else float(np.exp(last["val_loss"]))
    return {
        "final_val_loss": float(last["val_loss"]),
        "final_val_ppl": ppl,
        "best_val_loss": float(fin["val_loss"].min()) if len(fin) else np.nan,
    }


def default_target(runs) -> float:
    """max over methods of (max over the method's runs of the run's best validation loss)."""
    best: dict[str, float] = {}
    for run in runs:
        b = val_summary(run)["best_val_loss"]
        if np.isfinite(b):
            best[run.method] = max(best.get(run.method, -np.inf), b)
    return max(best.values()) if best else np.nan


def reach(run, target: float) -> dict:
    """Step, tokens and wall time of the first evaluation with val_loss <= target (NaN if never).

    Wall time is evals.time_s (elapsed seconds at the evaluation) or, without it, the summed step durations."""
    e = _evals(run)
    hit = e[e["val_loss"].astype(float) <= target] if len(e) and np.isfinite(target) else e.iloc[0:0]
    if not len(hit):
        return {"step_to_target": np.nan, "tokens_to_target": np.nan, "time_to_target_s": np.nan}
    first = hit.iloc[0]
    time_s = (
        float(first["time_s"]) if "time_s" in hit and pd.notna(first["time_s"]) else wall_time(run.steps, first["step"])
    )
    return {
        "step_to_target": float(first["step"]),
        "tokens_to_target": float(first["tokens"]),
        "time_to_target_s": time_s,
    }


def compare_runs(runs, target: float | None = None, rule=DEFAULT_RULE, factor: float = RECOVER_FACTOR) -> pd.DataFrame:
    """One row per run: instability metrics (train and probe), validation results, cost to the target."""
    target = default_target(runs) if target is None else float(target)
    rows = []
    for run in runs:
        m = run_metrics(run, rule, factor)
        has_probe = m.get("probe_n_points", 0) > 0
        m["class"] = m["probe_run_class"] if has_probe else m["run_class"]
        if m.get("nonfinite_points", 0) > 0:  # a NaN probe reads as "not evaluated": trust the training loss
            m["class"] = "diverged"
        m["class_source"] = "probe" if has_probe else "train"
        rows.append(m | val_summary(run) | reach(run, target) | {"target_val_loss": target})
    return pd.DataFrame(rows)


def method_summary(per_run: pd.DataFrame, metrics=SUMMARY_METRICS) -> pd.DataFrame:
    """Per method: number of runs and median / min / max of each metric over its runs (seeds)."""
    cols = [c for c in metrics if c in per_run.columns]
    rows = []
    for method, g in per_run.groupby("method", sort=True):
        row = {"method": method, "n_runs": len(g)}
        for c in cols:
            v = pd.to_numeric(g[c], errors="coerce")
            row.update({f"{c}_median": v.median(), f"{c}_min": v.min(), f"{c}_max": v.max()})
        rows.append(row)
    return pd.DataFrame(rows)


def target_ratios(per_run: pd.DataFrame, reference: str = "baseline") -> pd.DataFrame:
    """Per method: median tokens / wall time / steps to the target and their ratio to the reference method.

    `paired_*_ratio` is the median over runs matched on (batch_size, lr, seed) with the reference; NaN where
    nothing matches.
    """
    keys = ["batch_size", "lr", "seed"]
    cols = ["tokens_to_target", "time_to_target_s", "step_to_target"]
    med = per_run.groupby("method")[cols].median()
    ref = med.loc[reference] if reference in med.index else None
    base = per_run[per_run["method"] == reference].set_index(keys)[cols] if ref is not None else None
    rows = []
    for method, g in per_run.groupby("method", sort=True):
        row = {"method": method, "n_runs": len(g), "reached": int(g["tokens_to_target"].notna().sum())}
        for c in cols:
            row[f"{c}_median"] = med.loc[method, c]
            row[f"{c}_ratio"] = med.loc[method, c] / ref[c] if ref is not None and ref[c] else np.nan
            if base is not None:
                paired = g.set_index(keys)[c] / base[c].reindex(g.set_index(keys).index)
                row[f"paired_{c}_ratio"] = paired.median()
        rows.append(row)
    return pd.DataFrame(rows)


def _majority(classes: pd.Series) -> str:
    """Most frequent class; a tie goes to the less stable class (the cautious reading)."""
    counts = classes.value_counts()
    top = counts[counts == counts.max()].index
    return max(top, key=lambda c: CLASS_ORDER.index(c) if c in CLASS_ORDER else -1)


def stability_grid(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per (method, batch_size, lr): class counts over seeds, majority class, spike events median/min/max."""
    spikes = np.where(per_run["class_source"] == "probe", per_run["probe_spike_events"], per_run["spike_events"])
    ratio = np.where(per_run["class_source"] == "probe", per_run["probe_max_loss_ratio"], per_run["max_loss_ratio"])
    df = per_run.assign(events=spikes.astype(float), ratio=ratio.astype(float))
    rows = []
    for (method, batch, lr), g in df.groupby(["method", "batch_size", "lr"], dropna=False, sort=True):
        counts = g["class"].value_counts()
        rows.append(
            {
                "method": method,
                "batch_size": batch,
                "lr": lr,
                "n_seeds": len(g),
                "n_stable": int(counts.get("stable", 0)),
                "n_spiky": int(counts.get("spiky", 0)),
                "n_diverged": int(counts.get("diverged", 0)),
                "class": _majority(g["class"]),
                "spike_events_median": g["events"].median(),
                "spike_events_min": g["events"].min(),
                "spike_events_max": g["events"].max(),
                "max_loss_ratio_median": g["ratio"].median(),
                "class_source": "/".join(sorted(set(g["class_source"]))),
            }
        )
    return pd.DataFrame(rows)


def compare(
    runs, target: float | None = None, rule=DEFAULT_RULE, reference: str = "baseline"
) -> dict[str, pd.DataFrame]:
    """All comparison tables: per_run, summary, target (ratios), grid."""
    per_run = compare_runs(runs, target, rule)
    return {
        "per_run": per_run,
        "summary": method_summary(per_run),
        "target": target_ratios(per_run, reference),
        "grid": stability_grid(per_run),
    }


def summary_compact(
    summary: pd.DataFrame,
    metrics=(
        "probe_spike_events",
        "probe_max_loss_ratio",
        "spike_events",
        "max_loss_ratio",
        "final_val_loss",
        "final_val_ppl",
        "tokens_to_target",
        "time_to_target_s",
    ),
) -> pd.DataFrame:
    """method_summary as 'median [min, max]' strings, one column per metric."""
    rows = []
    for _, r in summary.iterrows():
        row = {"method": r["method"], "n_runs": r["n_runs"]}
        for m in metrics:
            if f"{m}_median" in r:
                row[m] = (
                    "–"
                    if pd.isna(r[f"{m}_median"])
                    else f"{r[f'{m}_median']:.3g} [{r[f'{m}_min']:.3g}, {r[f'{m}_max']:.3g}]"
                )
        rows.append(row)
    return pd.DataFrame(rows)
