"""Instability metrics of one run, on the training loss and on the fixed full-length probe loss.

All detection goes through gradvar.spikes (loss_ratio, ratio_spikes, z_spikes, spike_events, classify_run):
the live monitor and this analysis share one definition. Counts are spike *events* (runs of consecutive
flagged steps), not steps. Under SLW a short-sequence training loss is not comparable with a full-length
one, so baseline-vs-SLW comparisons use the `probe_` metrics.

Time to recover: steps from an event's first step until the loss first falls below
`recover_factor` x (the minimum loss before the event); NaN when it never does (counted as unrecovered).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradvar.spikes import SpikeRule, classify_run, loss_ratio, ratio_spikes, running_min_before, spike_events, z_spikes

DEFAULT_RULE = SpikeRule()
RECOVER_FACTOR = 1.05
"""Recovered = back within 5% of the pre-spike minimum (the ratio rule's 1.2 would end the event, not heal it)."""


def train_series(run) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) of the training loss, one entry per optimizer step."""
    s = run.steps
    if not len(s) or "loss" not in s:
        return np.array([], dtype=np.int64), np.array([], dtype=np.float64)
    return s["step"].to_numpy(np.int64), s["loss"].to_numpy(np.float64)


def probe_series(run) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) of the full-length probe loss at the steps where it was evaluated.

    From steps.probe_loss (NaN = no probe that step); if that column is absent or empty, from the probes
    table at its longest probe length.
    """
    s = run.steps
    if len(s) and "probe_loss" in s:
        loss = s["probe_loss"].to_numpy(np.float64)
        keep = ~np.isnan(loss)  # inf stays: a non-finite probe is a spike, not a missing value
        if keep.any():
            return s["step"].to_numpy(np.int64)[keep], loss[keep]
    p = run.probes
    if len(p) and {"probe_seqlen", "loss"} <= set(p.columns):
        full = p[p["probe_seqlen"] == p["probe_seqlen"].max()].sort_values("step")
        full = full[~full["loss"].isna()]
        return full["step"].to_numpy(np.int64), full["loss"].to_numpy(np.float64)
    return np.array([], dtype=np.int64), np.array([], dtype=np.float64)


def series(run, source: str = "train") -> tuple[np.ndarray, np.ndarray]:
    if source not in ("train", "probe"):
        raise ValueError(f"source must be 'train' or 'probe', got {source!r}")
    return train_series(run) if source == "train" else probe_series(run)


def spike_flags(losses, rule: SpikeRule = DEFAULT_RULE) -> dict[str, np.ndarray]:
    """Per-step flags of each detector ('any' is their union)."""
    r, z = ratio_spikes(losses, rule), z_spikes(losses, rule)
    return {"ratio": r, "z": z, "any": r | z}


def time_to_recover(losses, steps, events, factor: float = RECOVER_FACTOR) -> list[tuple[float, float]]:
    """(recover_step, steps_to_recover) per event; NaN when the loss never gets back below ref x factor."""
    x = np.asarray(losses, dtype=np.float64)
    st = np.asarray(steps)
    ref = running_min_before(x)
    out = []
    for start, _ in events:
        i0 = int(np.searchsorted(st, start))
        target = ref[i0] * factor if i0 < len(x) else np.nan
        j = _first_below(x, i0, target) if np.isfinite(target) else None
        out.append((np.nan, np.nan) if j is None else (float(st[j]), float(st[j] - start)))
    return out


def _first_below(x: np.ndarray, i0: int, target: float) -> int | None:
    """First index >= i0 with x < target, scanning in growing chunks (recoveries are usually quick)."""
    chunk = 256
    while i0 < len(x):
        part = x[i0 : i0 + chunk]
        with np.errstate(invalid="ignore"):
            hit = np.flatnonzero(part < target)
        if len(hit):
            return i0 + int(hit[0])
        i0 += chunk
        chunk *= 4
    return None


def spike_table(losses, steps, rule: SpikeRule = DEFAULT_RULE, factor: float = RECOVER_FACTOR) -> pd.DataFrame:
    """One row per spike event and detector: start/end step, peak loss and ratio, recovery."""
    x = np.asarray(losses, dtype=np.float64)
    st = np.asarray(steps)
    ratio = loss_ratio(x)
    ref = running_min_before(x)
    rows = []
    for det, flags in spike_flags(x, rule).items():
        events = spike_events(flags, st)
        for (start, end), (rec_step, ttr) in zip(events, time_to_recover(x, st, events, factor)):
            i0, i1 = np.searchsorted(st, start), np.searchsorted(st, end) + 1
            rows.append(
                {
                    "detector": det,
                    "start_step": start,
                    "end_step": end,
                    "n_steps": int(i1 - i0),
                    "peak_loss": float(np.max(x[i0:i1])),
                    "peak_ratio": float(np.max(ratio[i0:i1])),
                    "pre_min": float(ref[i0]),
                    "recover_step": rec_step,
                    "time_to_recover": ttr,
                }
            )
    cols = [
        "detector",
        "start_step",
        "end_step",
        "n_steps",
        "peak_loss",
        "peak_ratio",
        "pre_min",
        "recover_step",
        "time_to_recover",
    ]
    return pd.DataFrame(rows, columns=cols)


def instability(
    losses, steps, rule: SpikeRule = DEFAULT_RULE, factor: float = RECOVER_FACTOR, prefix: str = ""
) -> dict:
    """Scalar instability metrics of one loss series (keys prefixed by `prefix`)."""
    x = np.asarray(losses, dtype=np.float64)
    st = np.asarray(steps)
    out = {"n_points": len(x)}
    if len(x) == 0:
        out.update({k: np.nan for k in _METRIC_KEYS if k != "n_points"})
        out["run_class"] = "no data"
        return {prefix + k: v for k, v in out.items()}
    ratio = loss_ratio(x)
    table = spike_table(x, st, rule, factor)
    anyev = table[table["detector"] == "any"]
    span = float(st[-1] - st[0] + 1)
    finite_ratio = ratio[np.isfinite(ratio)]
    out.update(
        {
            "ratio_spike_events": int((table["detector"] == "ratio").sum()),
            "z_spike_events": int((table["detector"] == "z").sum()),
            "spike_events": len(anyev),
            "spike_steps": int(anyev["n_steps"].sum()),
            "spike_events_per_1k_steps": 1000.0 * len(anyev) / span,
            "max_loss_ratio": float(np.max(ratio)) if len(finite_ratio) < len(ratio) else float(np.max(finite_ratio)),
            "first_spike_step": float(anyev["start_step"].min()) if len(anyev) else np.nan,
            "median_time_to_recover": float(anyev["time_to_recover"].median()) if len(anyev) else np.nan,
            "max_time_to_recover": float(anyev["time_to_recover"].max()) if len(anyev) else np.nan,
            "unrecovered_events": int(anyev["time_to_recover"].isna().sum()),
            "nonfinite_points": int((~np.isfinite(x)).sum()),
            "final_loss": float(x[-1]),
            "run_class": classify_run(x, rule),
        }
    )
    return {prefix + k: v for k, v in out.items()}


_METRIC_KEYS = (
    "n_points",
    "ratio_spike_events",
    "z_spike_events",
    "spike_events",
    "spike_steps",
    "spike_events_per_1k_steps",
    "max_loss_ratio",
    "first_spike_step",
    "median_time_to_recover",
    "max_time_to_recover",
    "unrecovered_events",
    "nonfinite_points",
    "final_loss",
    "run_class",
)


def run_metrics(run, rule: SpikeRule = DEFAULT_RULE, factor: float = RECOVER_FACTOR) -> dict:
    """Run metadata + training-loss metrics + probe-loss metrics (prefix `probe_`)."""
    meta = {k: v for k, v in run.meta.items() if k != "peak_lr"}
    steps, loss = train_series(run)
    out = dict(
        meta,
        n_steps=len(steps),
        last_step=int(steps[-1]) if len(steps) else 0,
        tokens=_last(run.steps, "tokens"),
        wall_time_s=wall_time(run.steps),
    )
    out.update(instability(loss, steps, rule, factor))
    pst, ploss = probe_series(run)
    out.update(instability(ploss, pst, rule, factor, prefix="probe_"))
    return out


def wall_time(steps: pd.DataFrame, upto_step=None) -> float:
    """Seconds of training: the sum of steps.time_s, which the monitor records as each step's duration."""
    if not len(steps) or "time_s" not in steps:
        return np.nan
    t = steps["time_s"] if upto_step is None else steps.loc[steps["step"] <= upto_step, "time_s"]
    return float(t.sum()) if t.notna().any() else np.nan


def _last(df: pd.DataFrame, col: str) -> float:
    if not len(df) or col not in df:
        return np.nan
    v = df[col].dropna()
    return float(v.iloc[-1]) if len(v) else np.nan
