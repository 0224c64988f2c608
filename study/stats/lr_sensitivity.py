"""LR-sensitivity outcomes of an arm (one training recipe run at several peak LRs), as pure functions.

Wortsman et al. 2023 ("Small-scale proxies for large-scale Transformer training instabilities") measure
instability as the final loss across orders of magnitude of LR: a stable recipe keeps its loss near its best
over a wide LR range. Inputs are {peak LR: final validation loss} for one arm and seed (or a seed mean).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def _losses(final_loss: Mapping[float, float], cap: float | None) -> dict[float, float]:
    """Diverged runs (non-finite loss) count as `cap` (e.g. the loss at initialisation, ln vocab); without
    a cap they make every outcome NaN, since no finite number stands for them."""
    out = {}
    for lr, loss in final_loss.items():
        loss = float(loss)
        if cap is not None:
            loss = cap if not math.isfinite(loss) else min(loss, cap)
        out[float(lr)] = loss
    return out


def lr_sensitivity(final_loss: Mapping[float, float], cap: float | None = None) -> float:
    """Mean excess final loss over the arm's best LR: mean_lr (L(lr) - min_lr L); 0 for a flat curve."""
    losses = _losses(final_loss, cap)
    vals = np.array(list(losses.values()))
    if not len(vals) or not np.isfinite(vals).all():
        return math.nan
    return float(np.mean(vals - vals.min()))


def largest_lr_within(final_loss: Mapping[float, float], tol: float = 0.1, cap: float | None = None) -> float:
    """The largest peak LR whose final loss is within `tol` nats of the arm's best."""
    losses = _losses(final_loss, cap)
    vals = np.array(list(losses.values()))
    if not len(vals) or not np.isfinite(vals).all():
        return math.nan
    best = vals.min()
    return max(lr for lr, loss in losses.items() if loss <= best + tol)


def peak_ratio(ratio) -> float:
    """The largest probe loss ratio of a run (NaN entries, steps without a probe, are skipped; +inf, a
    diverged probe, is the peak)."""
    r = np.asarray(ratio, dtype=float)
    r = r[~np.isnan(r)]
    return float(r.max()) if len(r) else math.nan


def excess_area(x, ratio) -> float:
    """Area of max(0, ratio - 1) over x (steps or tokens), by the trapezoid rule over the probed points:
    a graded instability measure that a spike count saturates on. Integrating over x, not summing over
    probes, keeps a denser probe schedule from inflating it; over tokens, arms with different steps per
    token compare. NaN entries (no probe at that step) are skipped; +inf (a diverged probe) gives inf."""
    x, r = np.asarray(x, dtype=float), np.asarray(ratio, dtype=float)
    keep = ~np.isnan(r) & ~np.isnan(x)
    x, r = x[keep], r[keep]
    if len(r) < 2:
        return math.nan
    if np.isinf(r).any():
        return math.inf
    over = np.maximum(r - 1.0, 0.0)
    return float(np.sum((over[1:] + over[:-1]) / 2 * np.diff(x)))


def lr_curves(rows) -> dict[tuple, dict[float, float]]:
    """{(arm, seed): {peak LR: final loss}} from (arm, seed, lr, final_loss) rows (one per run); a repeated
    (arm, seed, lr) is an error, since two runs of one cell would be silently averaged or dropped."""
    out: dict[tuple, dict[float, float]] = {}
    for arm, seed, lr, loss in rows:
        cell = out.setdefault((arm, seed), {})
        if float(lr) in cell:
            raise ValueError(f"two runs of arm {arm!r}, seed {seed}, LR {lr:g}")
        cell[float(lr)] = float(loss)
    return out
