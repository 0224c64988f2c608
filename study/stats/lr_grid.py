"""The LR-grid tables (arms x peak LRs x paired seeds), as pure functions of loaded runs and of their rows.

A row per run (`grid_rows`), the LR outcomes per arm and seed (`arm_outcomes`), seed-paired differences
between arms at each LR (`paired`) and the noise margin (`noise_margin`). "Unstable" is a peak probe loss
ratio above UNSTABLE; the early window is steps <= EARLY_FACTOR x the run's LR warmup steps.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .lr_sensitivity import excess_area, largest_lr_within, lr_sensitivity, peak_ratio

UNSTABLE = 1.2
"""A run is unstable when its peak probe loss ratio exceeds this."""
EARLY_FACTOR = 3
"""The early window: steps <= EARLY_FACTOR x the LR warmup steps."""
WITHIN = 0.1
"""Nats of the arm's best final loss within which an LR still counts as training well."""
CAP_FRACTION = 0.95
"""An early bias-corrected v L1 at or above this fraction of clip^2 is at the clipping cap."""
STATES = ("adam_vhat_max", "adam_vhat_l1", "adam_v_max", "adam_v_l1")
"""The Adam variance states whose early maximum is tabled (bias-corrected first)."""


def _summary(run) -> dict:
    try:
        return json.loads((run.path / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _final_loss(run, summary: dict) -> float:
    if "final_val_loss" in summary and summary["final_val_loss"] is not None:
        return float(summary["final_val_loss"])
    e = run.evals
    return float(e.sort_values("step")["val_loss"].iloc[-1]) if len(e) and "val_loss" in e else math.nan


def _early(run) -> tuple[pd.DataFrame, int | None]:
    warmup = (run.config.get("optim") or {}).get("warmup_steps")
    s = run.steps
    if warmup is None or not len(s):
        return s.iloc[0:0], None
    return s[s["step"] <= EARLY_FACTOR * int(warmup)], int(warmup)


def _state_max(early: pd.DataFrame, col: str) -> float:
    if col not in early:
        return math.nan
    v = pd.to_numeric(early[col], errors="coerce").to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    return float(v.max()) if len(v) else math.nan


def _probe(run) -> tuple[float, float]:
    """(peak probe loss ratio, excess area above 1 over tokens in M)."""
    s = run.steps
    if "probe_loss_ratio" not in s or not len(s):
        return math.nan, math.nan
    r = pd.to_numeric(s["probe_loss_ratio"], errors="coerce").to_numpy(dtype=float)
    x = pd.to_numeric(s["tokens"], errors="coerce").to_numpy(dtype=float) / 1e6
    return peak_ratio(r), excess_area(x, r)


def run_row(run) -> dict:
    """One run's row; `note` says why a number is capped or NaN."""
    summary, notes = _summary(run), []
    vocab = (run.config.get("meta") or {}).get("vocab_size")
    cap = math.log(vocab) if vocab else math.nan
    loss = _final_loss(run, summary)
    if not math.isfinite(loss):
        notes.append(f"final val loss {loss} capped at ln(vocab)" if vocab else "final val loss non-finite, no vocab")
        loss = cap
    ratio, area = _probe(run)
    if math.isnan(ratio):
        notes.append("no probe loss recorded")
    early, warmup = _early(run)
    row = {"run": run.name, "arm": run.method, "lr": run.lr, "seed": run.seed, "final_val_loss": loss}
    row |= {"loss_cap": cap, "peak_ratio": ratio, "unstable": bool(ratio > UNSTABLE), "excess_area": area}
    tokens = float(run.steps["tokens"].max()) if len(run.steps) else float(summary.get("tokens", math.nan))
    row |= {"tokens": tokens, "epochs": float(summary.get("epochs", math.nan)), "warmup_steps": warmup}
    if "epochs" not in summary:
        notes.append("epochs not in summary.json")
    row |= {f"early_{c}": _state_max(early, c) for c in STATES}
    clip = float((run.config.get("optim") or {}).get("clip") or 0.0)
    frac = row["early_adam_vhat_l1"] / clip**2 if clip > 0 else math.nan
    row |= {"clip": clip, "vhat_l1_cap_frac": frac, "at_clip_cap": bool(frac >= CAP_FRACTION)}
    row |= {"wall_time_s": float(summary.get("wall_time_s", math.nan)), "note": "; ".join(notes)}
    return row


def grid_rows(runs) -> pd.DataFrame:
    """One row per run: arm (the run's method), LR, seed and its outcomes."""
    return pd.DataFrame([run_row(r) for r in runs])


def is_lr_grid(rows: pd.DataFrame) -> bool:
    """Every arm has at least two peak LRs."""
    if not len(rows):
        return False
    return bool((rows.groupby("arm")["lr"].nunique() >= 2).all())


def arm_outcomes(rows: pd.DataFrame) -> pd.DataFrame:
    """Per arm and seed: the best LR and loss, the LR sensitivity (mean excess over the best) and the
    largest LR within WITHIN nats of the best. A repeated (arm, seed, LR) is an error."""
    out = []
    for (arm, seed), g in rows.groupby(["arm", "seed"], sort=True):
        if g["lr"].duplicated().any():
            raise ValueError(f"two runs of arm {arm!r}, seed {seed} at one LR")
        curve = dict(zip(g["lr"].astype(float), g["final_val_loss"].astype(float)))
        best = min(curve, key=curve.get)
        out.append(
            {
                "arm": arm,
                "seed": seed,
                "n_lrs": len(curve),
                "best_lr": best,
                "best_loss": curve[best],
                "sensitivity": lr_sensitivity(curve),
                "largest_lr_within": largest_lr_within(curve, WITHIN),
            }
        )
    return pd.DataFrame(out)


def paired(rows: pd.DataFrame, a: str, b: str, cols=("final_val_loss", "excess_area")) -> pd.DataFrame:
    """a minus b at each LR for every seed both arms ran (same init and data order): lr, seed, d_<col>."""
    keys = ["lr", "seed"]
    left = rows[rows["arm"] == a].set_index(keys)[list(cols)]
    right = rows[rows["arm"] == b].set_index(keys)[list(cols)]
    both = left.join(right, lsuffix="_a", rsuffix="_b", how="inner").sort_index()
    out = pd.DataFrame(index=both.index)
    for c in cols:
        out[c + "_a"], out[c + "_b"] = both[c + "_a"], both[c + "_b"]
        out["d_" + c] = both[c + "_a"] - both[c + "_b"]
    return out.reset_index().assign(a=a, b=b)


SINGLE_SEED_MARGIN = 0.1
"""m of a one-seed grid, where no seed-to-seed range can be measured: the 0.1-nat tolerance of the LR outcomes."""


def noise_margin(rows: pd.DataFrame, floor: float = 0.02) -> tuple[float, str]:
    """m = max(floor, 2 x median over (arm, LR) cells of the seed-to-seed range of final loss), over cells
    with at least two seeds; SINGLE_SEED_MARGIN (said so) when no cell has two."""
    cells = rows.groupby(["arm", "lr"])["final_val_loss"]
    ranges = (cells.max() - cells.min())[cells.count() >= 2]
    if not len(ranges):
        return SINGLE_SEED_MARGIN, (
            f"one seed per cell, so no seed-to-seed range: m = {SINGLE_SEED_MARGIN:g} nats, the tolerance of "
            "'largest LR within 0.1 nats', unmeasured"
        )
    med = float(ranges.median())
    return max(floor, 2 * med), f"max({floor:g}, 2 x {med:.4g}) over {len(ranges)} cells"


def unstable_lrs(rows: pd.DataFrame, arm: str = "baseline") -> list[float]:
    """U: the LRs at which `arm` is unstable (peak probe loss ratio > UNSTABLE) in every seed."""
    g = rows[rows["arm"] == arm]
    return sorted(float(lr) for lr, c in g.groupby("lr") if len(c) and bool((c["peak_ratio"] > UNSTABLE).all()))
