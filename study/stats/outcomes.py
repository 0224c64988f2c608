"""Per-run outcomes over optimizer steps, as pure functions of a run's `steps` table.

Every spike measure is taken over optimizer steps, never tokens: arms that spend fewer tokens per step early
(SLW, its token-matched control) would otherwise look calmer for spiking at the same steps. Tokens appear
only beside the steps, as the cost of reaching the target.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

TARGET_MARGIN = 0.25
"""Nats below the validation split's unigram cross-entropy: the probe-loss target. A unigram model is the best
a model can do without context, so a loss this far below it is reachable only by using context (the plateau
exit), and a run that fits token frequencies faster does not count as further along."""


def _col(steps: pd.DataFrame, name: str) -> np.ndarray:
    if name not in steps or not len(steps):
        return np.full(len(steps), np.nan)
    return pd.to_numeric(steps[name], errors="coerce").to_numpy(dtype=float)


def steps_to_target(step, probe_loss, target: float) -> tuple[float, int | None]:
    """(first optimizer step whose probe loss is at or below `target`, its row index); (NaN, None) if never.
    Steps without a probe (NaN) are skipped; a non-finite target reaches nothing."""
    s, v = np.asarray(step, dtype=float), np.asarray(probe_loss, dtype=float)
    if not math.isfinite(target):
        return math.nan, None
    order = np.argsort(s, kind="stable")
    hit = np.flatnonzero(v[order] <= target)  # NaN compares False
    if not len(hit):
        return math.nan, None
    i = int(order[hit[0]])
    return float(s[i]), i


def peak_ratio(ratio) -> float:
    """The largest probe-loss ratio (probe loss over its best so far); NaN entries are skipped, +inf (a
    non-finite probe loss) is the peak."""
    r = np.asarray(ratio, dtype=float)
    r = r[~np.isnan(r)]
    return float(r.max()) if len(r) else math.nan


def excess_over_steps(step, ratio) -> float:
    """Area of max(0, ratio - 1) over optimizer steps (trapezoid rule over the probed steps): how high and how
    long the probe loss stays above its best so far. NaN entries are skipped; +inf gives inf."""
    x, r = np.asarray(step, dtype=float), np.asarray(ratio, dtype=float)
    keep = ~np.isnan(r) & ~np.isnan(x)
    x, r = x[keep], r[keep]
    if len(r) < 2:
        return math.nan
    if np.isinf(r).any():
        return math.inf
    order = np.argsort(x, kind="stable")
    x, over = x[order], np.maximum(r[order] - 1.0, 0.0)
    return float(np.sum((over[1:] + over[:-1]) / 2 * np.diff(x)))


def blowups(step, probe_loss, ln_vocab: float) -> list[tuple[int, float]]:
    """(step, probe loss) of every step whose probe loss is above ln(vocab), the loss of a uniform guess (or
    non-finite): the model has been pushed to worse than knowing nothing."""
    s, v = np.asarray(step, dtype=float), np.asarray(probe_loss, dtype=float)
    bad = ~np.isnan(v) & ~(v <= ln_vocab)
    return [(int(a), float(b)) for a, b in zip(s[bad], v[bad])]


def run_outcomes(steps: pd.DataFrame, target: float, ln_vocab: float) -> dict:
    """One run's outcomes from its steps table (step, tokens, probe_loss, probe_loss_ratio)."""
    step, tokens, probe = _col(steps, "step"), _col(steps, "tokens"), _col(steps, "probe_loss")
    ratio = _col(steps, "probe_loss_ratio")
    at, i = steps_to_target(step, probe, target)
    blown = blowups(step, probe, ln_vocab)
    last = np.flatnonzero(~np.isnan(probe))
    return {
        "steps_to_target": at,
        "tokens_to_target": float(tokens[i]) if i is not None else math.nan,
        "peak_ratio": peak_ratio(ratio),
        "peak_step": float(step[np.nanargmax(np.where(np.isnan(ratio), -np.inf, ratio))]) if len(ratio) else math.nan,
        "excess_steps": excess_over_steps(step, ratio),
        "blowup": bool(blown),
        "blowup_max": max((b for _, b in blown), default=math.nan),
        "blowup_steps": len(blown),
        "blowup_first_step": float(blown[0][0]) if blown else math.nan,
        "first_probe_loss": float(probe[last[0]]) if len(last) else math.nan,
        "final_probe_loss": float(probe[last[-1]]) if len(last) else math.nan,
        "last_step": float(np.nanmax(step)) if len(step) else math.nan,
    }
