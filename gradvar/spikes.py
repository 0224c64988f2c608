"""Loss-ratio and spike rules: the pure functions shared by the live monitor and the offline analysis.

Definitions (docs/records.md):
  loss ratio      r_t = L_t / min_{s<t} L_s, r_1 = 1 (the paper's instability measure)
  ratio spike     r_t > threshold and L_t - min_{s<t} L_s >= min_rise (the absolute floor stops the
                  rule firing on rounding noise of near-zero fine-tuning losses)
  z spike         L_t > mean + k*std of the previous `window` finite losses, with the same floor
  non-finite      NaN/inf losses are always spikes (and divergence), never errors
Consecutive spike steps form one spike event.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

RATIO_THRESHOLD = 1.2
Z_K = 6.0
Z_WINDOW = 128
MIN_RISE = 0.05  # nats


@dataclass(frozen=True)
class SpikeRule:
    """Thresholds of both detectors; one object serves the live monitor and the analysis."""

    ratio_threshold: float = RATIO_THRESHOLD
    """A step is a ratio spike when L_t / min_{s<t} L_s exceeds this."""
    z_k: float = Z_K
    """A step is a z spike when L_t exceeds mean + z_k * std of the previous window."""
    z_window: int = Z_WINDOW
    """How many previous finite losses the z rule looks at."""
    min_rise: float = MIN_RISE
    """Absolute floor (nats) a loss must rise above its reference to count as a spike."""
    z_min_history: int = 8
    """The z rule stays silent until this many finite losses have been seen."""

    def __post_init__(self):
        if not self.ratio_threshold > 1.0:
            raise ValueError(f"ratio_threshold must be > 1, got {self.ratio_threshold}")
        if self.z_window < 2 or self.z_min_history < 2:
            raise ValueError("z_window and z_min_history must be >= 2")
        if self.min_rise < 0:
            raise ValueError("min_rise must be >= 0")


def running_min_before(losses: np.ndarray) -> np.ndarray:
    """min_{s<t} L_s over finite losses (NaN before the first finite one)."""
    x = np.asarray(losses, dtype=np.float64)
    finite = np.where(np.isfinite(x), x, np.inf)
    prev = np.concatenate([[np.inf], np.minimum.accumulate(finite)[:-1]]) if len(x) else finite
    return np.where(np.isinf(prev), np.nan, prev)


def loss_ratio(losses) -> np.ndarray:
    """r_t = L_t / min_{s<t} L_s; r_1 = 1; NaN/inf losses give inf."""
    x = np.asarray(losses, dtype=np.float64)
    ref = running_min_before(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = x / ref
    r = np.where(np.isnan(ref), 1.0, r)
    return np.where(np.isfinite(x), r, np.inf)


def ratio_spikes(losses, rule: SpikeRule = SpikeRule()) -> np.ndarray:
    """Boolean flags: ratio spike or non-finite loss."""
    x = np.asarray(losses, dtype=np.float64)
    ref = running_min_before(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        hit = (x / ref > rule.ratio_threshold) & (x - ref >= rule.min_rise)
    return np.where(np.isnan(ref), False, hit) | ~np.isfinite(x)


def z_scores(losses, window: int = Z_WINDOW, min_history: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(z, mean): z = (L_t - mean) / std over the previous `window` finite losses (NaN if short)."""
    x = np.asarray(losses, dtype=np.float64)
    ok = np.isfinite(x)
    # Rolling over the finite losses alone, as the online detector keeps only those.
    prev = _as_series(x[ok]).shift(1).rolling(window, min_periods=min_history)
    mean, std = np.full(len(x), np.nan), np.full(len(x), np.nan)
    mean[ok], std[ok] = prev.mean().to_numpy(), prev.std(ddof=0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x - mean) / std
    return np.where(std > 0, z, np.nan), mean


def z_spikes(losses, rule: SpikeRule = SpikeRule()) -> np.ndarray:
    """Boolean flags: z spike or non-finite loss."""
    x = np.asarray(losses, dtype=np.float64)
    z, mean = z_scores(x, rule.z_window, rule.z_min_history)
    with np.errstate(invalid="ignore"):
        hit = (z > rule.z_k) & (x - mean >= rule.min_rise)
    return np.nan_to_num(hit, nan=False).astype(bool) | ~np.isfinite(x)


def spike_events(flags, steps=None) -> list[tuple[int, int]]:
    """Group consecutive flagged positions into (first_step, last_step) events."""
    f = np.asarray(flags, dtype=bool)
    st = np.arange(1, len(f) + 1) if steps is None else np.asarray(steps)
    events, start = [], None
    for i, on in enumerate(f):
        if on and start is None:
            start = i
        if not on and start is not None:
            events.append((int(st[start]), int(st[i - 1])))
            start = None
    if start is not None:
        events.append((int(st[start]), int(st[len(f) - 1])))
    return events


def classify_run(losses, rule: SpikeRule = SpikeRule()) -> str:
    """'diverged' (non-finite loss, or ends above the ratio threshold), 'spiky', or 'stable'."""
    x = np.asarray(losses, dtype=np.float64)
    if len(x) == 0:
        return "stable"
    if not np.all(np.isfinite(x)):
        return "diverged"
    tail = x[-max(1, min(10, len(x) // 10)) :]
    best = np.min(x[: len(x) - len(tail)]) if len(x) > len(tail) else np.inf
    if np.isfinite(best) and np.median(tail) / best > rule.ratio_threshold and np.median(tail) - best >= rule.min_rise:
        return "diverged"
    return "spiky" if ratio_spikes(x, rule).any() else "stable"


def _as_series(x):
    import pandas as pd

    return pd.Series(x)


@dataclass
class OnlineSpikeDetector:
    """The same rules, fed one loss at a time; its state survives checkpoint/resume."""

    rule: SpikeRule = field(default_factory=SpikeRule)
    best: float = float("inf")
    history: deque = field(default_factory=deque)
    in_event: bool = False

    def update(self, loss: float) -> dict:
        """Return this step's loss_ratio, spike flags, z score and whether a new event starts."""
        finite = bool(np.isfinite(loss))
        ratio = 1.0 if not np.isfinite(self.best) else (loss / self.best if finite else float("inf"))
        ratio_hit = (not finite) or (
            np.isfinite(self.best) and ratio > self.rule.ratio_threshold and loss - self.best >= self.rule.min_rise
        )
        z, z_hit = float("nan"), not finite
        if finite and len(self.history) >= self.rule.z_min_history:
            h = np.fromiter(self.history, dtype=np.float64)
            mean, std = h.mean(), h.std()
            z = (loss - mean) / std if std > 0 else float("nan")
            z_hit = bool(z > self.rule.z_k and loss - mean >= self.rule.min_rise)
        spike = bool(ratio_hit or z_hit)
        new_event = spike and not self.in_event
        self.in_event = spike
        if finite:
            self.best = min(self.best, loss)
            self.history.append(loss)
            while len(self.history) > self.rule.z_window:
                self.history.popleft()
        return {
            "loss_ratio": ratio,
            "spike_ratio": bool(ratio_hit),
            "spike_z": bool(z_hit),
            "z": z,
            "new_event": new_event,
        }

    def state_dict(self) -> dict:
        return {"best": self.best, "history": list(self.history), "in_event": self.in_event}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])
        self.history = deque(float(v) for v in state["history"])
        self.in_event = bool(state["in_event"])
