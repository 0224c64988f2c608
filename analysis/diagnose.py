"""Diagnose a user's own (possibly divergent) run from its log: spike events, early-warning signals, advice.

Spike events join three detectors, all built on gradvar.spikes:
  * the paper's loss-ratio rule and the z rule, with SpikeRule's absolute floor `min_rise` (so rounding noise
    on a near-zero fine-tuning loss does not fire);
  * a sustained-rise detector: the same ratio rule applied to a rolling median of the loss, its threshold
    raised to the log's own noise level (measured on the log loss), keeping only rises that last at least
    `sustain` log entries;
  * NaN/inf losses, which are always events (divergence).
Every other numeric column is then ranked by how well it moves *before* the events (lead time, hit rate,
AUROC of "an event starts within the next `horizon` entries"), raw and detrended, in analysis.diagnose_signals.
The advice and summary are worded in analysis.diagnose_advice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gradvar.spikes import SpikeRule, loss_ratio, ratio_spikes, running_min_before, spike_events, z_spikes

from .diagnose_advice import SNIPPET, build_advice, build_summary, needs_recording
from .diagnose_signals import _relative_to_recent, rank_signals, signal_variants
from .logs import LogData, LogError, from_frame, load_log

DEFAULT_HORIZON = 10
"""Log entries ahead in which a signal must warn of an event."""
SUSTAIN = 7
"""Rolling-median window of the sustained-rise detector, and the fewest entries a sustained rise lasts."""
NOISE_K = 4.0
"""A smoothed rise must exceed this many noise standard deviations of the smoothed log loss."""

SPIKE_COLUMNS = ("event", "kind", "start_step", "end_step", "peak_step", "n_entries", "peak_loss", "ref_loss",
                 "peak_ratio", "rise", "severity", "at_end", "position", "lr", "lr_frac", "grad_norm_rel")


@dataclass
class Diagnosis:
    """What diagnose() found; every table is tidy (one row per event / per signal / per log entry)."""

    source: str
    run_class: str
    """'stable', 'spiky' or 'diverged'."""
    spikes: pd.DataFrame
    """One row per event: SPIKE_COLUMNS; kind is 'spike', 'sustained_rise' or 'nonfinite'."""
    signals: pd.DataFrame
    """One row per other signal, best first: diagnose_signals.SIGNAL_COLUMNS (its best variant: raw, dlog or
    log_ratio_median)."""
    advice: list
    summary: str
    entries: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per log entry: step, loss, loss_ratio, ref_loss, trend, event (0 = none)."""
    signal_variants: pd.DataFrame = field(default_factory=pd.DataFrame)
    """All variants of all signals (the rows `signals` picked from)."""
    notes: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    """The numbers the advice was built from (learning-rate warmup, grad-norm findings, eval trend, ...)."""
    interval: float = 1.0
    horizon: int = DEFAULT_HORIZON

    @property
    def record_more(self) -> bool:
        """Whether the output shows how to record the signals the log lacks (diagnose_advice.needs_recording)."""
        return needs_recording(self.facts)

    def to_dict(self) -> dict:
        """JSON-ready: NaN and inf become None."""
        return _jsonable({
            "source": self.source, "run_class": self.run_class, "summary": self.summary, "advice": self.advice,
            "spikes": self.spikes.to_dict("records"), "signals": self.signals.to_dict("records"),
            "notes": self.notes, "facts": self.facts, "interval": self.interval, "horizon": self.horizon,
            "snippet": SNIPPET,
        })


def diagnose(df_or_path, *, rule: SpikeRule = SpikeRule(), horizon: int = DEFAULT_HORIZON,
             sustain: int = SUSTAIN) -> Diagnosis:
    """Diagnose a log given as a path, a LogData or a DataFrame with step and loss columns."""
    log = as_log(df_or_path)
    horizon, sustain = max(1, int(horizon)), max(3, int(sustain))
    with np.errstate(all="ignore"):
        entries, spikes, notes = find_spikes(log.df, rule, sustain)
        if "lr" in log.df:
            entries["lr"] = log.df["lr"].to_numpy(np.float64)
        spikes = _annotate(spikes, log.df)
        variants = signal_variants(log.df, entries, spikes, horizon)
        signals = rank_signals(variants)
        facts = collect_facts(log, entries, spikes, signals, rule)
        run_class = classify(log.df["loss"].to_numpy(np.float64), spikes, rule)
    diag = Diagnosis(source=log.source, run_class=run_class, spikes=spikes, signals=signals, advice=[], summary="",
                     entries=entries, signal_variants=variants, notes=list(log.notes) + notes, facts=facts,
                     interval=log.interval, horizon=horizon)
    diag.advice = build_advice(diag, rule)
    diag.summary = build_summary(diag, log)
    return diag


def as_log(obj) -> LogData:
    """A LogData from a path, a LogData or a DataFrame."""
    if isinstance(obj, LogData):
        return obj
    if isinstance(obj, pd.DataFrame):
        return from_frame(obj)
    if isinstance(obj, (str, Path)):
        return load_log(obj)
    raise LogError(f"<{type(obj).__name__}>: expected a path, a LogData or a DataFrame")


# --- spike events ---------------------------------------------------------------------------------------------

def find_spikes(df: pd.DataFrame, rule: SpikeRule, sustain: int) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """(per-entry table, one row per event, notes) for a log with strictly increasing steps."""
    steps, x = df["step"].to_numpy(np.int64), df["loss"].to_numpy(np.float64)
    finite, notes = np.isfinite(x), []
    trend = np.full(len(x), np.nan)
    if (x[finite] < 0).any():
        # A ratio to a running minimum means nothing once losses can be negative: keep the z rule only.
        entry, sustained = z_spikes(x, rule), np.zeros(len(x), bool)
        notes.append("the loss is negative somewhere: ratio rules are undefined, only the z rule and NaN/inf are used")
    else:
        entry = ratio_spikes(x, rule) | z_spikes(x, rule)
        sustained, trend = sustained_rises(x, rule, sustain)
    flags = entry | sustained | ~finite
    ref = running_min_before(x)
    event_id = np.zeros(len(x), np.int64)
    rows = []
    for k, (a, b) in enumerate(spike_events(flags, steps), start=1):
        i0, i1 = int(np.searchsorted(steps, a)), int(np.searchsorted(steps, b))
        event_id[i0:i1 + 1] = k
        rows.append(_event_row(k, i0, i1, steps, x, ref, sustain))
    entries = pd.DataFrame({"step": steps, "loss": x, "loss_ratio": loss_ratio(x), "ref_loss": ref,
                            "trend": trend, "event": event_id})
    spikes = pd.DataFrame(rows, columns=[c for c in SPIKE_COLUMNS if c not in ("lr", "lr_frac", "grad_norm_rel")])
    return entries, spikes, notes


def sustained_rises(x: np.ndarray, rule: SpikeRule, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(flags, smoothed loss): the ratio rule on a rolling median, above the log's noise, for >= window entries."""
    ok = np.isfinite(x) & (x > 0)
    flags, smooth_full = np.zeros(len(x), bool), np.full(len(x), np.nan)
    if ok.sum() < window:
        return flags, smooth_full
    y = np.log(x[ok])
    trend = pd.Series(y).rolling(window, center=True, min_periods=window // 2 + 1).median().to_numpy()
    # Robust per-entry noise of the log loss; a median of `window` entries scatters ~1.25 sigma / sqrt(window).
    sigma = 1.4826 * float(np.nanmedian(np.abs(y - trend)))
    threshold = max(rule.ratio_threshold, math.exp(min(700.0, NOISE_K * 1.2533 * sigma / math.sqrt(window))))
    smooth = np.exp(trend)
    smooth_rule = SpikeRule(ratio_threshold=threshold, min_rise=0.0)
    hit = ratio_spikes(smooth, smooth_rule) & np.isfinite(smooth)
    flags[ok] = _long_runs(hit, window)
    smooth_full[ok] = smooth
    return flags, smooth_full


def _long_runs(flags: np.ndarray, n: int) -> np.ndarray:
    """Keep only runs of True at least n long."""
    out = np.zeros(len(flags), bool)
    i = 0
    while i < len(flags):
        if flags[i]:
            j = i
            while j < len(flags) and flags[j]:
                j += 1
            out[i:j] = j - i >= n
            i = j
        else:
            i += 1
    return out


def _event_row(k: int, i0: int, i1: int, steps, x, ref, sustain: int) -> dict:
    seg = x[i0:i1 + 1]
    bad = ~np.isfinite(seg)
    if bad.any():
        kind, peak = "nonfinite", i0 + int(np.argmax(bad))
    else:
        kind, peak = ("sustained_rise" if len(seg) >= sustain else "spike"), i0 + int(np.argmax(seg))
    if not np.isfinite(x[peak]):
        r = math.inf
    else:  # a zero earlier minimum makes any rise infinite; a negative one makes the ratio meaningless
        r = float(x[peak] / ref[i0]) if ref[i0] > 0 else math.inf if ref[i0] == 0 else math.nan
    span = max(1, int(steps[-1] - steps[0]))
    return {"event": k, "kind": kind, "start_step": int(steps[i0]), "end_step": int(steps[i1]),
            "peak_step": int(steps[peak]), "n_entries": i1 - i0 + 1, "peak_loss": float(x[peak]),
            "ref_loss": float(ref[i0]), "peak_ratio": r, "rise": float(x[peak] - ref[i0]),
            "severity": _severity(kind, r, float(x[peak] - ref[i0])),
            "at_end": i1 == len(x) - 1, "position": float(steps[i0] - steps[0]) / span}


def _severity(kind: str, ratio: float, rise: float) -> str:
    """Both relative and absolute size count: x4 of a 0.006 loss (0.02 nats) is mild, 3 -> 9 nats is severe."""
    if kind == "nonfinite" or (ratio >= 3 and rise >= 0.5):
        return "severe"
    return "moderate" if ratio >= 1.5 and rise >= 0.1 else "mild"


def _annotate(spikes: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
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


def classify(x: np.ndarray, spikes: pd.DataFrame, rule: SpikeRule) -> str:
    """gradvar.spikes.classify_run, extended with our events: a sustained rise still on at the end diverged."""
    from gradvar.spikes import classify_run

    if classify_run(x, rule) == "diverged" or (spikes["kind"] == "nonfinite").any():
        return "diverged"
    if (spikes["at_end"].astype(bool) & (spikes["kind"] == "sustained_rise")).any():
        return "diverged"
    return "spiky" if len(spikes) else "stable"


# --- facts the advice rests on --------------------------------------------------------------------------------

def collect_facts(log: LogData, entries: pd.DataFrame, spikes: pd.DataFrame, signals: pd.DataFrame,
                  rule: SpikeRule) -> dict:
    """Plain numbers about the run (LR schedule, grad norm, eval trend, noise level) for advice and summary."""
    df, x = log.df, log.df["loss"].to_numpy(np.float64)
    fin = x[np.isfinite(x)]
    ratio = entries["loss_ratio"].to_numpy()
    late = fin[len(fin) // 2:]
    f = {"n_entries": len(df), "first_step": int(df["step"].iloc[0]), "last_step": int(df["step"].iloc[-1]),
         "interval": log.interval, "fmt": log.fmt, "ratio_threshold": rule.ratio_threshold, "min_rise": rule.min_rise,
         "near_zero": bool(len(late) and np.median(late) < 0.1 and (fin >= 0).all()),
         "median_loss_late": float(np.median(late)) if len(late) else math.nan,
         "naive_fire_frac": float(np.mean(ratio[np.isfinite(ratio)] > rule.ratio_threshold)) if len(df) else 0.0,
         "loss_decimals": _decimals(fin), "batch_size": log.meta.get("train_batch_size"),
         "epochs": log.meta.get("epoch", float(df["epoch"].max()) if "epoch" in df else None)}
    finite_ratio = np.where(np.isfinite(ratio), ratio, np.nan)
    if np.isfinite(finite_ratio).any():
        i = int(np.nanargmax(finite_ratio))
        f["max_ratio"], f["max_ratio_step"] = float(finite_ratio[i]), int(df["step"].iloc[i])
    bad = ~np.isfinite(x)
    f["first_nonfinite_step"] = int(df["step"][bad].iloc[0]) if bad.any() else None
    f["recovered_after_nonfinite"] = bool(bad.any() and np.isfinite(x[-1]))
    f.update(_lr_facts(df))
    f.update(_grad_facts(df, spikes))
    f.update(_eval_facts(log.eval_df))
    measured = signals[signals["role"] == "measured"]
    f["top_signal"] = measured.iloc[0].to_dict() if len(measured) else None
    wanted = ("grad_norm", "lr", "adam_v_max", "adam_v_l1", "grad_noise_scale", "seqlen")
    f["missing_signals"] = [c for c in wanted if c not in df or not np.isfinite(df[c].to_numpy(np.float64)).any()]
    return f


def _decimals(v: np.ndarray):
    """How many decimals the logged losses were rounded to (None if not visibly rounded)."""
    v = v[np.isfinite(v)]
    for d in range(1, 7):
        if len(v) >= 5 and np.all(np.abs(v * 10**d - np.round(v * 10**d)) < 1e-6 * np.maximum(1, np.abs(v * 10**d))):
            return d
    return None


def _lr_facts(df: pd.DataFrame) -> dict:
    if "lr" not in df or not np.isfinite(df["lr"].to_numpy(np.float64)).any():
        return {"peak_lr": None}
    lr, steps = df["lr"].to_numpy(np.float64), df["step"].to_numpy()
    peak = float(np.nanmax(np.where(np.isfinite(lr), lr, np.nan)))
    reach = np.flatnonzero(np.nan_to_num(lr) >= (1 - 1e-6) * peak)  # warmup ends where the LR first peaks
    first = lr[np.isfinite(lr)][0]
    return {"peak_lr": peak, "warmup_end_step": int(steps[reach[0]]) if len(reach) else None,
            "warmup_visible": bool(first < 0.5 * peak), "lr_first": float(first), "lr_last": float(lr[-1])}


def _grad_facts(df: pd.DataFrame, spikes: pd.DataFrame) -> dict:
    if "grad_norm" not in df:
        return {"has_grad_norm": False}
    g, x, steps = df["grad_norm"].to_numpy(np.float64), df["loss"].to_numpy(np.float64), df["step"].to_numpy()
    fin = g[np.isfinite(g)]
    med = float(np.median(fin)) if len(fin) else math.nan
    nan_steps = [int(s) for s in steps[~np.isfinite(g) & np.isfinite(x)]]
    big = np.isfinite(g) & (g > 5 * med) if np.isfinite(med) and med > 0 else np.zeros(len(g), bool)
    rel = spikes.loc[spikes["kind"] != "nonfinite", "grad_norm_rel"].to_numpy(np.float64)
    return {"has_grad_norm": True, "grad_norm_median": med, "nan_grad_steps": nan_steps,
            "grad_spike_steps": [int(s) for s in steps[big]],
            "grad_spike_max": float(g[big].max()) if big.any() else None,
            "grad_spike_max_step": int(steps[big][np.argmax(g[big])]) if big.any() else None,
            "grad_at_spikes": float(np.nanmedian(rel)) if np.isfinite(rel).any() else None}


def _eval_facts(ev) -> dict:
    """Trend of up to three eval metrics (eval_loss first): first and last value, better or worse."""
    if ev is None or ev.empty:
        return {"evals": [], "eval_improved": None}
    skip = ("runtime", "per_second", "tokens", "epoch", "step", "flos")
    cols = sorted((c for c in ev.columns if not any(w in c for w in skip)), key=lambda c: (c != "eval_loss", c))
    out = []
    for metric in cols[:3]:
        v = ev[metric].to_numpy(np.float64)
        v = v[np.isfinite(v)]
        if len(v) < 2:
            continue
        up = any(w in metric for w in ("acc", "bleu", "f1", "rouge", "exact", "score"))  # higher is better
        d = np.diff(v) if up else -np.diff(v)
        out.append({"metric": metric, "first": float(v[0]), "last": float(v[-1]), "n": int(len(v)),
                    "improved": bool(d.sum() > 0), "monotone": bool((d >= 0).all())})
    return {"evals": out, "eval_improved": out[0]["improved"] if out else None}



def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj if obj is None or isinstance(obj, str) else str(obj)
