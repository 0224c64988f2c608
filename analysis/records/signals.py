"""The series the correlation study needs from a run: its gradient-variance signals (whole-model columns of
`steps`, per-group `stat[group]` series of `layers`) and its loss-ratio target with the spike spans."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradvar.spikes import loss_ratio, spike_events

from .metrics import DEFAULT_RULE, series, spike_flags

STEP_SIGNALS = (
    "adam_v_max",
    "adam_v_l1",
    "grad_trace_sigma",
    "grad_noise_scale",
    "grad_noise_scale_ema",
    "grad_norm",
    "update_rms",
    "grad_var_max",
)
"""The whole-model gradient-variance signals of the correlation study (columns of the steps table, and
grad_noise_scale_ema derived from two of them)."""


NOISE_SPAN = 20
"""Steps (EMA span) over which grad_noise_scale_ema averages tr(Sigma) and |G|^2 before dividing."""


@dataclass(frozen=True)
class Signal:
    """One signal series of one run: values `x` at optimizer steps `step` (sorted)."""

    name: str
    stat: str
    group: str
    step: np.ndarray
    x: np.ndarray


def smoothed_noise_scale(trace, true_sq, span: int = NOISE_SPAN) -> np.ndarray:
    """B_simple = tr(Sigma) / |G|^2 with numerator and denominator averaged separately first (exponential
    averages over the steps where each is defined), as McCandlish et al. do and design.md asks. Per-step
    |G|^2 estimates are noisy and often negative, so the per-step ratio (grad_noise_scale) swings wildly and
    changes sign. NaN where a step has no estimate, before `span // 4` estimates, and where the averaged
    |G|^2 is not positive."""
    t = pd.Series(np.asarray(trace, dtype=np.float64))
    g = pd.Series(np.asarray(true_sq, dtype=np.float64))
    ok = np.isfinite(t) & np.isfinite(g)
    n_before = np.cumsum(ok.to_numpy())
    ema = lambda v: v.where(ok).ewm(span=span, ignore_na=True).mean().to_numpy()  # noqa: E731
    mt, mg = ema(t), ema(g)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = mt / mg
    return np.where(ok & (n_before >= max(1, span // 4)) & (mg > 0), out, np.nan)


def step_column(steps: pd.DataFrame, name: str) -> np.ndarray | None:
    """A column of the steps table as float64, or the signal derived from its columns; None when absent."""
    if name == "grad_noise_scale_ema":
        if not {"grad_trace_sigma", "grad_true_sq"} <= set(steps.columns):
            return None
        return smoothed_noise_scale(steps["grad_trace_sigma"], steps["grad_true_sq"])
    return steps[name].to_numpy(np.float64) if name in steps else None


def run_signals(run, signals=STEP_SIGNALS, groups: bool = True) -> list[Signal]:
    """Step-level signals of run.steps, plus `stat[group]` series from run.layers."""
    out = []
    s = run.steps
    for name in signals:
        x = step_column(s, name)
        if x is not None and not np.isnan(x).all():
            out.append(Signal(name, name, "all", s["step"].to_numpy(np.int64), x))
    lay = run.layers
    if groups and len(lay) and {"group", "stat", "value"} <= set(lay.columns):
        for (group, stat), g in lay.groupby(["group", "stat"], sort=True, observed=True):
            if g["value"].notna().any():
                g = g.sort_values("step")
                out.append(
                    Signal(
                        f"{stat}[{group}]",
                        str(stat),
                        str(group),
                        g["step"].to_numpy(np.int64),
                        g["value"].to_numpy(np.float64),
                    )
                )
    return out


def target_of(run, source: str = "train", rule=DEFAULT_RULE):
    """(steps, loss ratio, spike event spans as an (n, 2) array of first/last step) of the train or probe loss."""
    st, loss = series(run, source)
    spans = np.array(spike_events(spike_flags(loss, rule)["any"], st), dtype=np.int64).reshape(-1, 2)
    return st, loss_ratio(loss), spans


def in_spans(steps, spans: np.ndarray) -> np.ndarray:
    """Whether each step lies inside one of the (sorted, disjoint) spike spans."""
    steps = np.asarray(steps, dtype=np.int64)
    if not len(spans):
        return np.zeros(len(steps), bool)
    j = np.searchsorted(spans[:, 0], steps, side="right") - 1
    return (j >= 0) & (steps <= spans[np.maximum(j, 0), 1])


def align_to(sig_step, tgt_step, values) -> np.ndarray:
    """values (indexed like tgt_step) at sig_step; NaN where the target has no such step."""
    if len(tgt_step) == 0:
        return np.full(len(sig_step), np.nan)
    if len(sig_step) == len(tgt_step) and np.array_equal(sig_step, tgt_step):
        return np.asarray(values, dtype=np.float64)
    idx = np.clip(np.searchsorted(tgt_step, sig_step), 0, len(tgt_step) - 1)
    return np.where(tgt_step[idx] == sig_step, np.asarray(values, dtype=np.float64)[idx], np.nan)
