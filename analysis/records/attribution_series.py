"""Every series the spike attribution judges, from a run's record tables, each on the step axis of the
training loss it can be compared with.

- `steps`: every numeric column except bookkeeping and the training loss itself (loss, loss_max, loss_ratio,
  loss_z, the spike flags).
- `layers`: one series per (group, stat), named `stat[group]`.
- `probes`: one series per (probe length, stat) for loss, grad_norm, grad_trace_sigma_per_token and
  grad_sq_max, named `probe_stat[len L]`; recorded every few steps only (sparse).

Alignment: the training loss of step t is measured on the parameters after step t - 1, and so are the
gradient statistics and Adam state of step t. The held-out probe loss, the attention-logit maximum and the
sequence-length probe are measured after step t's update, on the parameters the loss of step t + 1 sees: they
are moved one step later, so a model that went bad shows in both on the same step and neither "leads" the
other by an artefact of when it was measured. The update of step t stays at t: it comes before the loss it
changes.

The LR schedule: `lr` is judged like every series but reported as the schedule (a jump of the LR is a cause,
a warmup ramp is not a rise by the rule); `update_rms` (overall and per group) is divided by the scheduled LR
of its step, the update per unit of LR, so that it does not rise merely because warmup raises the LR. A group
whose LR is scaled behind the schedule's back still shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .departure import to_scale

SKIP_STEPS = frozenset(
    (
        "step",
        "tokens",
        "time_s",
        "tokens_per_s",
        "world_size",
        "micro_batches",
        "nonfinite_loss",
        "nonfinite_grad",
        "update_skipped",
        "pacing_action",
        "loss",
        "loss_max",
        "loss_ratio",
        "loss_z",
        "spike_ratio",
        "spike_z",
        "probe_loss_ratio",
        "run",
        "method",
        "seed",
        "peak_lr",
    )
)
"""Columns of `steps` that are not signals: bookkeeping, the training loss and what is derived from it (and
the probe loss ratio, a copy of the probe loss on another scale)."""
AFTER_UPDATE = frozenset(("probe_loss", "max_attn_logit"))
"""steps columns measured on the parameters after the step's update (moved one step later)."""
INPUT = frozenset(("seqlen", "batch_size"))
"""The batch's shape: what the data loader fed, not what the model did."""
PROBE_STATS = ("loss", "grad_norm", "grad_trace_sigma_per_token", "grad_sq_max")
PER_LR = "update_rms"


@dataclass(frozen=True)
class Series:
    """One judged series: recorded (step, value) pairs on the loss's step axis, finite values only."""

    name: str
    role: str
    """'schedule' (lr), 'input' (seqlen, batch_size), 'held_out' (probe loss, sequence-length probe), 'model'."""
    group: str
    """'all' for a whole-model column, the parameter group for layers, 'len L' for a probe length."""
    stat: str
    step: np.ndarray
    x: np.ndarray
    y: np.ndarray
    """x on the series' scale (departure.to_scale)."""
    scale: str
    sparse: bool
    """Recorded at fewer than half of the steps it spans."""


LOSSES = frozenset(("loss", "probe_loss"))
"""Losses in nats: judged on their own scale (departure.to_scale)."""


def _series(name, role, group, stat, step, x) -> Series | None:
    step, x = np.asarray(step, dtype=np.int64), np.asarray(x, dtype=np.float64)
    order = np.argsort(step, kind="stable")
    step, x = step[order], x[order]
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return None
    y, scale = to_scale(x[ok], nats=stat in LOSSES)
    st = step[ok]
    sparse = len(st) < 0.5 * (st[-1] - st[0] + 1)
    return Series(name, role, group, stat, st, x[ok], y, scale, bool(sparse))


def _per_lr(values: np.ndarray, value_steps: np.ndarray, lr_step: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """values / the scheduled LR of their step (NaN where the LR is unknown or not positive)."""
    idx = np.clip(np.searchsorted(lr_step, value_steps), 0, max(len(lr_step) - 1, 0))
    if not len(lr_step):
        return np.full(len(values), np.nan)
    rate = np.where(lr_step[idx] == value_steps, lr[idx], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rate > 0, values / rate, np.nan)


def collect_series(steps: pd.DataFrame, layers=None, probes=None) -> list[Series]:
    """Every judged series of a run's tables (layers and probes optional), on the training loss's step axis."""
    out: list[Series] = []
    st = steps["step"].to_numpy(np.int64)
    lr = steps["lr"].to_numpy(np.float64) if "lr" in steps else np.full(len(st), np.nan)
    for col in steps.columns:
        if col in SKIP_STEPS or not pd.api.types.is_numeric_dtype(steps[col]) or pd.api.types.is_bool_dtype(steps[col]):
            continue
        x = steps[col].to_numpy(np.float64)
        role = (
            "schedule" if col == "lr" else "input" if col in INPUT else "held_out" if col == "probe_loss" else "model"
        )
        name, at = col, st
        if col == PER_LR:
            x, name = _per_lr(x, st, st, lr), "update_rms/lr"
        if col in AFTER_UPDATE:
            at = st + 1
        s = _series(name, role, "all", col, at, x)
        if s is not None:
            out.append(s)
    if layers is not None and len(layers) and {"group", "stat", "value"} <= set(layers.columns):
        for (group, stat), g in layers.groupby(["group", "stat"], sort=True, observed=True):
            x, gs = g["value"].to_numpy(np.float64), g["step"].to_numpy(np.int64)
            name = f"{stat}[{group}]"
            if stat == PER_LR:
                x, name = _per_lr(x, gs, st, lr), f"update_rms/lr[{group}]"
            s = _series(name, "model", str(group), str(stat), gs, x)
            if s is not None:
                out.append(s)
    if probes is not None and len(probes) and "probe_seqlen" in probes:
        for length, g in probes.groupby("probe_seqlen", sort=True):
            for stat in PROBE_STATS:
                if stat in g:
                    s = _series(
                        f"probe_{stat}[len {int(length)}]",
                        "held_out",
                        f"len {int(length)}",
                        stat,
                        g["step"].to_numpy(np.int64) + 1,
                        g[stat].to_numpy(np.float64),
                    )
                    if s is not None:
                        out.append(s)
    return out


def loss_series(steps: pd.DataFrame) -> Series | None:
    """The training loss as a Series (its own departure is judged by the same rule)."""
    return _series("loss", "loss", "all", "loss", steps["step"].to_numpy(np.int64), steps["loss"].to_numpy(np.float64))
