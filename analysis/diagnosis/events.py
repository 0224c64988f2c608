"""Loss events of a user's log: spikes, sustained rises and non-finite losses, each standing out from the log's
own noise and passing the absolute floor.

Built on gradvar.spikes, the rules the live monitor uses: a candidate spike is what ratio_spikes or z_spikes
flag (the paper's loss ratio against the running minimum, the z rule, and SpikeRule.min_rise). The live monitor
sees every step of a run it can trust; a user's log may be logged every step of a batch-1 fine-tune or every
100 steps, with a noise level the rules cannot know. So here a candidate must also rise above the log's noise:
its log loss must exceed the median of the previous NOISE_WINDOW entries by NOISE_K robust noise scales (the
scale from the spread of first differences of the log loss over that window, so a trend does not count as
noise), and by min_rise nats in the loss itself. Whatever the logging interval, the unit is an entry of the log.

One episode is one event: flagged entries closer than GAP entries join, and an event lasts while the loss
stays above its pre-event level (a spike that decays over 30 entries is one spike, not 30).

A log shorter than SHORT_LOG finite entries has too little history for that noise gate (its scale rests on a
handful of differences, and NOISE_K of them is more than any real jump), nor for a sustained rise (2 x
`sustain` entries). There two rules that need no window find events too:
  * a *jump*: an entry whose log loss rises over the previous entry (and over the median of all entries before
    it) by JUMP_K times the largest step-to-step move before it, past the ratio threshold of its running
    minimum and by min_rise nats. From the fifth entry; at the third and fourth, with one or two moves to
    compare with, the loss must also be JUMP_EARLY_RATIO times the previous entry;
  * an *end rise*: the log's last END_MIN or more entries all above the minimum of the entries before them by
    the ratio threshold, by min_rise nats and by END_K times the median step-to-step move of the log loss
    before them (the short-log form of "an event still on at the last entry").

A sustained rise is a rolling median of the log loss that climbs above its own running minimum by the ratio
threshold, by NOISE_K_SUSTAINED noise scales of a median and by min_rise nats, for at least `sustain` entries.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradvar.spikes import SpikeRule, ratio_spikes, running_min_before, spike_events, z_spikes

from .signals import _relative_to_recent

NOISE_WINDOW = 32
"""Entries in the trailing window of the local level and noise scale."""
NOISE_K = 6.0
"""A spike's log loss exceeds the local level by this many robust noise scales (gradvar's z_k)."""
NOISE_K_SUSTAINED = 4.0
"""A sustained rise exceeds its running minimum by this many noise scales of a rolling median."""
GAP = 2
"""Flagged entries at most this many entries apart are one episode."""
MAD_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal
SCALE_MIN_HISTORY = SpikeRule().z_min_history
"""First differences a local noise scale needs, as gradvar's z rule: from 3 or 4 of them a noisy log can look
quiet for a moment, and every ordinary wobble after it would stand out. Until then the whole log's scale is used."""


SHORT_LOG = 16
"""Logs with fewer finite losses than this also get the jump rule (two local windows of SCALE_MIN_HISTORY)."""
JUMP_K = 2.0
"""A jump rises over the previous entry by this many times the largest earlier move (both in log loss)."""
JUMP_MIN_HISTORY = 4
"""Finite entries a jump needs before it for the JUMP_K rule alone: three moves to compare its rise with (with
two, 6-9% of pure-noise logs of 6-15 entries at 10-30% noise show a jump; with three, 2-4%, and a 6.4x jump
is still found in 99% of them at 20% noise)."""
JUMP_EARLY_RATIO = 3.0
"""At the third and fourth entry (one or two moves before) a jump must also be this many times the previous
entry: a 3x one-step rise is 3.7 noise scales even at 30% noise per entry."""
END_MIN = 2
"""Entries an end rise lasts at least (one high last entry is a jump's business)."""
END_K = 4.0
"""An end rise is above the earlier minimum by this many median moves (2-4% of pure-noise logs of 6-15 entries
at 10-30% noise end in one; none of 300 decreasing from-scratch curves with 5% noise)."""


TINY = 1e-12
"""Losses of exactly 0 are logged as this (a collapse to 0, then any rise over the floor, is an infinite ratio)."""


def log_loss(x: np.ndarray) -> np.ndarray:
    """log(loss) where the loss is finite and >= 0 (0 as TINY), NaN elsewhere."""
    ok = np.isfinite(x) & (x >= 0)
    return np.where(ok, np.log(np.maximum(np.where(ok, x, 1.0), TINY)), np.nan)


def level_loss(level: float) -> float:
    """The loss a log level stands for (0 for the TINY of a collapsed loss)."""
    return 0.0 if level <= math.log(TINY) * 0.99 else math.exp(level)


def diff_noise(y: np.ndarray) -> float:
    """Robust per-entry noise of a series from its first differences (a steady trend adds nothing)."""
    d = np.diff(y[np.isfinite(y)])
    if len(d) < 3:
        return math.nan
    return MAD_SIGMA * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2)


def local_level(y: np.ndarray, window: int = NOISE_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(level, scale) per entry from the previous `window` entries: median of y, robust noise of its diffs."""
    s = pd.Series(y)
    level = s.shift(1).rolling(window, min_periods=1).median().to_numpy()
    d = s.diff()
    dev = (d - d.shift(1).rolling(window, min_periods=3).median()).abs()
    scale = dev.shift(1).rolling(window, min_periods=SCALE_MIN_HISTORY).median().to_numpy() * MAD_SIGMA / math.sqrt(2)
    glob = diff_noise(y)
    # Too little history for a local scale: the whole log's scale stands in (a spike at entry 3 is still seen).
    scale = np.where(np.isfinite(scale), scale, glob if np.isfinite(glob) else 0.0)
    return level, np.maximum(scale, 1e-12)


def spike_flags(x: np.ndarray, rule: SpikeRule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flags, level, scale): gradvar's ratio/z candidates that also stand out from the log's noise."""
    y = log_loss(x)
    level, scale = local_level(y)
    cand = ratio_spikes(x, rule) | z_spikes(x, rule)
    above = (y - level > NOISE_K * scale) & (x - np.exp(level) >= rule.min_rise)
    return np.nan_to_num(cand & above, nan=False).astype(bool) & np.isfinite(x), level, scale


def jump_flags(x: np.ndarray, rule: SpikeRule) -> np.ndarray:
    """Entries that jump well above the spread of the entries before them (the short-log rule, no window).

    The spread is the largest step-to-step move of the log loss before the entry, moves into and out of an
    earlier jump left out (a second jump is compared with the noise, not with the first jump).
    """
    y = log_loss(x)
    flags = np.zeros(len(x), bool)
    fin = np.flatnonzero(np.isfinite(y))
    ref = running_min_before(x)
    for k in range(2, len(fin)):
        i, j = fin[k], fin[k - 1]
        moves = [abs(y[fin[m + 1]] - y[fin[m]]) for m in range(k - 1) if not (flags[fin[m + 1]] or flags[fin[m]])]
        if not moves:
            continue
        rise = y[i] - max(y[j], float(np.median(y[fin[:k]])))  # a dip and its recovery is no jump
        hit = rise > JUMP_K * max(moves) and x[i] >= rule.ratio_threshold * ref[i] and x[i] - x[j] >= rule.min_rise
        if k < JUMP_MIN_HISTORY:
            hit = hit and x[i] >= JUMP_EARLY_RATIO * x[j]
        flags[i] = bool(hit)
    return flags


def end_rise_flags(x: np.ndarray, rule: SpikeRule) -> np.ndarray:
    """The last entries of a short log when they all stay well above the minimum before them (see module doc)."""
    y = log_loss(x)
    flags = np.zeros(len(x), bool)
    fin = np.flatnonzero(np.isfinite(y))
    if len(fin) < JUMP_MIN_HISTORY + END_MIN or fin[-1] != len(x) - 1:
        return flags  # a log ending in NaN/inf has its event already
    for k in range(JUMP_MIN_HISTORY, len(fin) - END_MIN + 1):
        before, tail = fin[:k], fin[k:]
        low = float(x[before].min())
        step = float(np.median(np.abs(np.diff(y[before]))))
        up = (x[tail] >= rule.ratio_threshold * low) & (x[tail] - low >= rule.min_rise)
        if low > 0 and up.all() and (y[tail] - math.log(low) > END_K * step).all():
            flags[tail] = True
            break
    return flags


def sustained_flags(x: np.ndarray, rule: SpikeRule, window: int, floor: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(flags, smoothed loss): rolling-median rises above noise, ratio threshold and floor for >= window entries."""
    y = log_loss(x)
    ok = np.isfinite(y)
    flags, smooth = np.zeros(len(x), bool), np.full(len(x), np.nan)
    if ok.sum() < 2 * window:
        return flags, smooth
    m = pd.Series(y[ok]).rolling(window, center=True, min_periods=window // 2 + 1).median().to_numpy()
    sigma = diff_noise(y)
    need = max(math.log(rule.ratio_threshold), NOISE_K_SUSTAINED * 1.2533 * sigma / math.sqrt(window))
    ref = running_min_before(np.exp(m))
    with np.errstate(invalid="ignore", divide="ignore"):
        hit = (m - np.log(ref) > need) & ((np.exp(m) - ref >= rule.min_rise) if floor else True)
    flags[ok] = _long_runs(np.nan_to_num(hit, nan=False).astype(bool), window)
    smooth[ok] = np.exp(m)
    return flags, smooth


def episodes(flags: np.ndarray, x: np.ndarray, level: np.ndarray, scale: np.ndarray, rule: SpikeRule) -> list:
    """[(i0, i1)] entry ranges, one per episode: nearby flags joined, each extended while the loss stays up."""
    out = []
    y = log_loss(x)
    for a, b in spike_events(flags, np.arange(len(flags))):
        i0, i1 = int(a), int(b)
        b0, s0 = level[i0], scale[i0]
        while i1 + 1 < len(x) and (
            not np.isfinite(x[i1 + 1])
            or (np.isfinite(b0) and y[i1 + 1] - b0 > 2 * s0 and x[i1 + 1] - math.exp(b0) >= rule.min_rise / 2)
        ):
            i1 += 1
        if out and i0 - out[-1][1] <= GAP + 1:
            out[-1] = (out[-1][0], max(out[-1][1], i1))
        else:
            out.append((i0, i1))
    return out


def _long_runs(flags: np.ndarray, n: int) -> np.ndarray:
    """Keep only runs of True at least n long."""
    out = np.zeros(len(flags), bool)
    for a, b in spike_events(flags, np.arange(len(flags))):
        out[a : b + 1] = b - a + 1 >= n
    return out


SPIKE_COLUMNS = (
    "event",
    "kind",
    "start_step",
    "end_step",
    "peak_step",
    "n_entries",
    "peak_loss",
    "ref_loss",
    "peak_ratio",
    "rise",
    "noise_z",
    "severity",
    "at_end",
    "position",
    "lr",
    "lr_frac",
    "grad_norm_rel",
)


def find_spikes(df: pd.DataFrame, rule: SpikeRule, sustain: int) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """(per-entry table, one row per event, notes) for a log with strictly increasing steps."""
    steps, x = df["step"].to_numpy(np.int64), df["loss"].to_numpy(np.float64)
    finite, notes = np.isfinite(x), []
    trend = np.full(len(x), np.nan)
    y = log_loss(x)
    level, scale = local_level(y)
    if (x[finite] < 0).any():
        # A ratio to a running minimum means nothing once losses can be negative: keep the z rule only.
        spike, sustained = z_spikes(x, rule) & finite, np.zeros(len(x), bool)
        notes.append("the loss is negative somewhere: ratio rules are undefined, only the z rule and NaN/inf are used")
    else:
        spike, level, scale = spike_flags(x, rule)
        if finite.sum() < SHORT_LOG:
            spike |= jump_flags(x, rule) | end_rise_flags(x, rule)
        sustained, trend = sustained_flags(x, rule, sustain)
    event_id = np.zeros(len(x), np.int64)
    rows = []
    for k, (i0, i1) in enumerate(episodes(spike | sustained | ~finite, x, level, scale, rule), start=1):
        # A centred rolling median starts a rise a few entries early: the event starts where the loss is up.
        while i0 < i1 and np.isfinite(x[i0]) and x[i0] - _reference(i0, x, level, trend) < rule.min_rise:
            i0 += 1
        event_id[i0 : i1 + 1] = k
        kind = "spike" if i1 - i0 + 1 < sustain else "sustained_rise"
        rows.append(_event_row(k, i0, i1, steps, x, kind, _reference(i0, x, level, trend)))
    entries = pd.DataFrame(
        {
            "step": steps,
            "loss": x,
            "loss_ratio": x / running_min_before(x),
            "ref_loss": np.exp(level),
            "noise": scale,
            "trend": trend,
            "event": event_id,
        }
    )
    entries.loc[0, "loss_ratio"] = 1.0
    spikes = pd.DataFrame(rows, columns=[c for c in SPIKE_COLUMNS if c not in ("lr", "lr_frac", "grad_norm_rel")])
    return entries, spikes, notes


def _before(i: int, x, level) -> float:
    """The loss level just before entry i: the local median, or the previous entry when there is no history."""
    if np.isfinite(level[i]):
        return level_loss(level[i])
    return float(x[i - 1]) if i > 0 and np.isfinite(x[i - 1]) else math.inf


def _reference(i0: int, x, level, trend) -> float:
    """The loss an event is measured against: its level just before, or the lowest smoothed loss before it if
    lower (a rise that starts while the loss still comes down from an earlier event counts from the bottom)."""
    ref = _before(i0, x, level)
    prior = trend[:i0][np.isfinite(trend[:i0])]
    if len(prior):
        ref = min(ref, float(prior.min()))
    return ref if np.isfinite(ref) else math.nan


def _event_row(k: int, i0: int, i1: int, steps, x, kind: str, ref: float) -> dict:
    seg = x[i0 : i1 + 1]
    bad = ~np.isfinite(seg)
    if bad.any():
        kind, peak = "nonfinite", i0 + int(np.argmax(bad))
    else:
        peak = i0 + int(np.argmax(seg))
    ref_loss = ref
    if not np.isfinite(x[peak]):
        r = math.inf
    else:
        r = float(x[peak] / ref_loss) if ref_loss > 0 else math.inf if ref_loss == 0 else math.nan
    span = max(1, int(steps[-1] - steps[0]))
    rise = float(x[peak] - ref_loss)
    return {
        "event": k,
        "kind": kind,
        "start_step": int(steps[i0]),
        "end_step": int(steps[i1]),
        "peak_step": int(steps[peak]),
        "n_entries": i1 - i0 + 1,
        "peak_loss": float(x[peak]),
        "ref_loss": ref_loss,
        "peak_ratio": r,
        "rise": rise,
        "noise_z": math.nan,
        "severity": _severity(kind, r, rise),
        "at_end": i1 == len(x) - 1,
        "position": float(steps[i0] - steps[0]) / span,
    }


def _severity(kind: str, ratio: float, rise: float) -> str:
    """Both relative and absolute size count: x4 of a 0.006 loss (0.02 nats) is mild, 3 -> 9 nats is severe."""
    if kind == "nonfinite" or (ratio >= 3 and rise >= 0.5):
        return "severe"
    return "moderate" if ratio >= 1.5 and rise >= 0.1 else "mild"


def annotate(spikes: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Add the LR at each event (and its fraction of the peak LR) and grad_norm at the peak vs its recent median."""
    spikes = spikes.copy()
    steps = df["step"].to_numpy(np.int64)
    lr = df["lr"].to_numpy(np.float64) if "lr" in df else None
    g = df["grad_norm"].to_numpy(np.float64) if "grad_norm" in df else None
    peak_lr = np.nanmax(np.where(np.isfinite(lr), lr, np.nan)) if lr is not None and np.isfinite(lr).any() else np.nan
    lrs, fracs, rels = [], [], []
    for _, ev in spikes.iterrows():
        i0, ip = int(np.searchsorted(steps, ev["start_step"])), int(np.searchsorted(steps, ev["peak_step"]))
        lrs.append(float(lr[i0]) if lr is not None else np.nan)
        fracs.append(lrs[-1] / peak_lr if peak_lr and np.isfinite(peak_lr) and peak_lr > 0 else np.nan)
        rels.append(_relative_to_recent(g, ip) if g is not None else np.nan)
    spikes["lr"], spikes["lr_frac"], spikes["grad_norm_rel"] = lrs, fracs, rels
    return spikes.loc[:, list(SPIKE_COLUMNS)]


def sub_floor_rise(x: np.ndarray, rule: SpikeRule, sustain: int, steps: np.ndarray):
    """The largest sustained relative rise that only the absolute floor rejected, or None (for a note)."""
    with_floor, _ = sustained_flags(x, rule, sustain)
    flags, smooth = sustained_flags(x, rule, sustain, floor=False)
    flags &= ~with_floor
    best = None
    for a, b in spike_events(flags, np.arange(len(flags))):
        ref = np.nanmin(smooth[: a + 1])
        peak = a + int(np.nanargmax(smooth[a : b + 1]))
        row = {
            "start_step": int(steps[a]),
            "end_step": int(steps[b]),
            "peak_step": int(steps[peak]),
            "ratio": float(smooth[peak] / ref),
            "rise": float(smooth[peak] - ref),
        }
        if best is None or row["ratio"] > best["ratio"]:
            best = row
    return best


def classify(spikes: pd.DataFrame) -> str:
    """'diverged' (a non-finite loss, or an event still on at the end of the log), 'spiky' or 'stable'.

    gradvar.spikes.classify_run calls a run diverged when its last loss is above the ratio threshold of its
    running minimum; on a noisy per-step log that is noise, so here only the noise-aware events count.
    """
    if (spikes["kind"] == "nonfinite").any() or spikes["at_end"].astype(bool).any():
        return "diverged"
    return "spiky" if len(spikes) else "stable"
