"""Diagnose a user's own (possibly divergent) run from its log: spike events, early-warning signals, advice.

Spike events join three detectors, all built on gradvar.spikes:
  * the paper's loss-ratio rule and the z rule, with SpikeRule's absolute floor `min_rise` (so rounding noise
    on a near-zero fine-tuning loss does not fire);
  * a sustained-rise detector: the same ratio rule applied to a rolling median of the loss, its threshold
    raised to the log's own noise level (measured on the log loss), keeping only rises that last at least
    `sustain` log entries;
  * NaN/inf losses, which are always events (divergence).
Every other numeric column is then ranked by how well it moves *before* the events (lead time, hit rate,
AUROC of "an event starts within the next `horizon` entries"), raw and detrended.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest, rankdata

from gradvar.spikes import SpikeRule, loss_ratio, ratio_spikes, running_min_before, spike_events, z_spikes

from .logs import LogData, LogError, from_frame, load_log

DEFAULT_HORIZON = 10
"""Log entries ahead in which a signal must warn of an event."""
SUSTAIN = 7
"""Rolling-median window of the sustained-rise detector, and the fewest entries a sustained rise lasts."""
NOISE_K = 4.0
"""A smoothed rise must exceed this many noise standard deviations of the smoothed log loss."""
QUANTILE, BASE_WINDOW = 0.95, 50
"""A signal 'fires' above its rolling QUANTILE over the previous BASE_WINDOW entries."""

SPIKE_COLUMNS = ("event", "kind", "start_step", "end_step", "peak_step", "n_entries", "peak_loss", "ref_loss",
                 "peak_ratio", "rise", "severity", "at_end", "position", "lr", "lr_frac", "grad_norm_rel")
SIGNAL_COLUMNS = ("rank", "signal", "role", "variant", "auroc", "hit_rate", "chance_hit_rate", "p_value", "precision",
                  "n_events", "median_lead_entries", "median_lead_steps", "at_spike", "n_obs")
SCHEDULES = ("lr", "seqlen", "batch_size", "momentum", "weight_decay")
"""Set by the user, not measured: only their raw level is compared (is trouble at high LR / long sequences?)."""
# Columns that are the loss itself, a mirror of it, or a clock: not candidate early-warning signals.
_NOT_SIGNALS = ("loss", "ppl", "perplexity", "accuracy", "acc", "spike", "epoch", "tokens", "flos", "runtime",
                "per_second", "per_s", "time", "wall", "step")


@dataclass
class Diagnosis:
    """What diagnose() found; every table is tidy (one row per event / per signal / per log entry)."""

    source: str
    run_class: str
    """'stable', 'spiky' or 'diverged'."""
    spikes: pd.DataFrame
    """One row per event: SPIKE_COLUMNS; kind is 'spike', 'sustained_rise' or 'nonfinite'."""
    signals: pd.DataFrame
    """One row per other signal, best first: SIGNAL_COLUMNS (its best variant: raw, dlog or log_ratio_median)."""
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


def _relative_to_recent(v: np.ndarray, i: int, window: int = 20) -> float:
    """v[i] / median of the finite v over the previous `window` entries (NaN without history)."""
    prev = v[max(0, i - window):i]
    prev = prev[np.isfinite(prev)]
    if not len(prev) or not np.isfinite(v[i]) or np.median(prev) <= 0:
        return math.nan
    return float(v[i] / np.median(prev))


def classify(x: np.ndarray, spikes: pd.DataFrame, rule: SpikeRule) -> str:
    """gradvar.spikes.classify_run, extended with our events: a sustained rise still on at the end diverged."""
    from gradvar.spikes import classify_run

    if classify_run(x, rule) == "diverged" or (spikes["kind"] == "nonfinite").any():
        return "diverged"
    if (spikes["at_end"].astype(bool) & (spikes["kind"] == "sustained_rise")).any():
        return "diverged"
    return "spiky" if len(spikes) else "stable"


# --- signals that move before the events ----------------------------------------------------------------------

def signal_columns(df: pd.DataFrame) -> list:
    """Numeric columns other than the loss, its mirrors and clocks, with enough finite, varying values."""
    out = []
    for col in df.columns:
        parts = set(col.split("_"))
        mirror = any(w in parts or col.endswith(w) for w in _NOT_SIGNALS) and not col.endswith("scale")
        if mirror or col in ("tokens_per_s", "batch_size"):  # an fp16 loss_scale is a signal, not a mirror
            continue
        v = df[col].to_numpy(np.float64)
        fin = v[np.isfinite(v)]
        if len(fin) >= 8 and np.ptp(fin) > 0:
            out.append(col)
    return out


def _is_schedule(col: str) -> bool:
    return col in SCHEDULES or col.startswith("lr_") or col.endswith("_lr")


def detrended(v: np.ndarray) -> dict:
    """raw, dlog (step-to-step change of the log) and log_ratio_median (log of v over its trailing median)."""
    out = {"raw": v}
    pos = np.isfinite(v) & (v > 0)
    if pos.sum() >= 8:
        lv = np.where(pos, np.log(np.where(pos, v, 1.0)), np.nan)
        out["dlog"] = np.concatenate([[np.nan], np.diff(lv)])
        med = pd.Series(np.where(pos, v, np.nan)).shift(1).rolling(BASE_WINDOW, min_periods=5).median().to_numpy()
        out["log_ratio_median"] = np.where(pos & (med > 0), lv - np.log(np.where(med > 0, med, 1.0)), np.nan)
    return out


def signal_variants(df: pd.DataFrame, entries: pd.DataFrame, spikes: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """One row per (signal, variant) with its lead-time statistics against the event onsets."""
    steps = df["step"].to_numpy(np.int64)
    in_event = entries["event"].to_numpy() > 0
    onsets = np.array([int(np.searchsorted(steps, s)) for s in spikes["start_step"]], dtype=np.int64)
    onsets = onsets[onsets > 0]  # an event at the first entry has no history to be warned by
    rows = []
    for col in signal_columns(df):
        at = [_relative_to_recent(df[col].to_numpy(np.float64), int(np.searchsorted(steps, s)))
              for s in spikes["peak_step"]]
        at_spike = float(np.nanmedian(at)) if np.isfinite(at).any() else math.nan
        role = "schedule" if _is_schedule(col) else "measured"
        variants = detrended(df[col].to_numpy(np.float64))
        for name, v in variants.items() if role == "measured" else [("raw", variants["raw"])]:
            stats = lead_stats(v, onsets, in_event, steps, horizon)
            rows.append({"signal": col, "role": role, "variant": name, **stats, "at_spike": at_spike})
    cols = [c for c in SIGNAL_COLUMNS if c != "rank"]
    return pd.DataFrame(rows, columns=cols)


def lead_stats(v: np.ndarray, onsets: np.ndarray, in_event: np.ndarray, steps: np.ndarray, horizon: int) -> dict:
    """Hit rate, lead (entries and steps), precision and AUROC of 'v above its rolling quantile' before onsets."""
    s = pd.Series(np.where(np.isfinite(v), v, np.nan))
    thr = s.shift(1).rolling(BASE_WINDOW, min_periods=10).quantile(QUANTILE).to_numpy()
    exceed = np.nan_to_num(v > thr, nan=False).astype(bool) & ~in_event
    leads_e, leads_s = [], []
    for i0 in onsets:
        lo = max(0, int(i0) - horizon)
        hits = np.flatnonzero(exceed[lo:i0])
        if len(hits):
            start = lo + hits[-1]
            while start - 1 >= lo and exceed[start - 1]:  # lead = start of the last run of alarms before onset
                start -= 1
            leads_e.append(int(i0 - start))
            leads_s.append(int(steps[i0] - steps[start]))
    label = _onset_within(len(v), onsets, horizon)
    usable = ~in_event & np.isfinite(v)
    base = exceed[~in_event].mean() if (~in_event).any() else math.nan
    n = len(onsets)
    chance = 1 - (1 - base) ** horizon if n and np.isfinite(base) else math.nan
    p = math.nan
    if n and np.isfinite(chance):
        # How surprising the hits are if alarms fell at random at the base rate (independent entries assumed).
        p = float(binomtest(len(leads_e), n, min(max(chance, 0.0), 1.0), alternative="greater").pvalue)
    return {"auroc": auroc(v[usable], label[usable]),
            "hit_rate": len(leads_e) / n if n else math.nan,
            "chance_hit_rate": chance, "p_value": p,
            "precision": float(label[exceed].mean()) if exceed.any() else math.nan,
            "n_events": n,
            "median_lead_entries": float(np.median(leads_e)) if leads_e else math.nan,
            "median_lead_steps": float(np.median(leads_s)) if leads_s else math.nan,
            "n_obs": int(usable.sum())}


def _onset_within(n: int, onsets: np.ndarray, horizon: int) -> np.ndarray:
    """label[t] = an event starts within (t, t + horizon] entries."""
    t = np.arange(n)
    if not len(onsets):
        return np.zeros(n, bool)
    srt = np.sort(onsets)
    idx = np.searchsorted(srt, t, side="right")
    nxt = np.where(idx < len(srt), srt[np.minimum(idx, len(srt) - 1)], np.iinfo(np.int64).max)
    return (nxt - t >= 1) & (nxt - t <= horizon)


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties count half); NaN unless both classes are present."""
    label = np.asarray(label, bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def rank_signals(variants: pd.DataFrame) -> pd.DataFrame:
    """Each signal's best variant (highest AUROC, raw first on ties), best signals first."""
    if variants.empty:
        return pd.DataFrame(columns=list(SIGNAL_COLUMNS))
    order = {"raw": 0, "dlog": 1, "log_ratio_median": 2}
    v = variants.assign(_a=variants["auroc"].fillna(-1.0), _o=variants["variant"].map(order),
                        _m=(variants["role"] != "measured").astype(int))
    best = v.sort_values(["signal", "_a", "_o"], ascending=[True, False, True]).groupby("signal").head(1)
    # Measured signals first: a schedule 'predicting' spikes only says when in training they happen.
    best = best.sort_values(["_m", "_a", "hit_rate", "signal"], ascending=[True, False, False, True],
                            na_position="last")
    best = best.drop(columns=["_a", "_o", "_m"]).reset_index(drop=True)
    best.insert(0, "rank", np.arange(1, len(best) + 1))
    return best.loc[:, list(SIGNAL_COLUMNS)]


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


# --- advice ---------------------------------------------------------------------------------------------------

PAPER = ('Li, Zhang & He 2022, "The Stability-Efficiency Dilemma: Investigating Sequence Length Warmup for '
         'Training GPT Models"')
SNIPPET = ('mon = gradvar.Monitor(model, optimizer, "runs/my_run", quantities="paper")\n'
           '...  # after optimizer.step():\n'
           'mon.step(loss=loss)')
HF_SNIPPET = 'trainer.add_callback(gradvar.integrations.hf.GradvarCallback("runs/my_run"))'
_VARIANT_WORDS = {"raw": "its value", "dlog": "its step-to-step change of log",
                  "log_ratio_median": "its ratio to its recent median"}


def build_advice(diag: Diagnosis, rule: SpikeRule) -> list:
    """Plain-English advice, most important first; each item is one paragraph."""
    f, sp = diag.facts, diag.spikes
    out = []
    for make in (_adv_divergence, _adv_sustained, _adv_grad_nan, _adv_early, _adv_grad_spikes, _adv_grad_cause,
                 _adv_signal, _adv_near_zero, _adv_eval, _adv_memorise, _adv_logging, _adv_stable, _adv_record):
        out.extend(make(f, sp, diag, rule))
    return out


def _g(x) -> str:
    return f"{x:.3g}"


def _step_list(steps, n: int = 6) -> str:
    s = ", ".join(str(v) for v in steps[:n])
    return s + (f" and {len(steps) - n} more" if len(steps) > n else "")


def _lr_phrase(ev, f) -> str:
    if f.get("peak_lr") is None or not np.isfinite(ev["lr"]):
        return ""
    return f" The LR there was {_g(ev['lr'])} ({ev['lr_frac']:.0%} of the peak {_g(f['peak_lr'])})."


def _adv_divergence(f, sp, diag, rule):
    out, peak = [], f.get("peak_lr")
    lower = f" (e.g. {_g(peak / 2)})" if peak else ""
    nonfin = sp[sp["kind"] == "nonfinite"]
    if len(nonfin):
        s, ev = f["first_nonfinite_step"], nonfin.iloc[0]
        tail = ("and later became finite again (steps were probably skipped)" if f["recovered_after_nonfinite"]
                else "and stayed non-finite: the run diverged")
        before = sp[sp["start_step"] < ev["start_step"]]
        warn = (f" The loss already spiked {len(before)} time(s) before (first at step {before['start_step'].iloc[0]}):"
                " restart before that first spike." if len(before) else "")
        out.append(f"The loss became NaN/inf at step {s} {tail}.{_lr_phrase(ev, f)}{warn} Restart from the last "
                   f"checkpoint saved before the trouble with the peak LR halved{lower}, gradient clipping at 1.0 "
                   "and a longer LR warmup.")
    ends = sp[(sp["kind"] == "sustained_rise") & sp["at_end"].astype(bool)]
    if len(ends) and not len(nonfin):
        ev = ends.iloc[-1]
        out.append(f"The loss rose from {_g(ev['ref_loss'])} to {_g(ev['peak_loss'])} ({ev['peak_ratio']:.2f}x) from "
                   f"step {ev['start_step']} and had not come back by the last entry (step {ev['end_step']}): the run "
                   f"diverged without NaN.{_lr_phrase(ev, f)} Restart from a checkpoint before step {ev['start_step']} "
                   f"with a lower peak LR{lower} and gradient clipping at 1.0.")
    return out


def _adv_sustained(f, sp, diag, rule):
    sus = sp[(sp["kind"] == "sustained_rise") & ~sp["at_end"].astype(bool)]
    if not len(sus):
        return []
    ev = _worst(sus)
    span = int(ev["end_step"] - ev["start_step"] + diag.interval)
    txt = (f"Sustained rise: the loss stayed above its best for {ev['n_entries']} log entries (steps {ev['start_step']}"
           f"-{ev['end_step']}, about {span} steps), peaking at {_g(ev['peak_loss'])} at step {ev['peak_step']}, "
           f"{ev['peak_ratio']:.2f}x its earlier minimum {_g(ev['ref_loss'])}, then recovered.{_lr_phrase(ev, f)} "
           "A rise that lasts this long is the optimizer overshooting at this learning rate, not one bad batch: ")
    if f.get("eval_improved"):
        txt = txt.split(" A rise that")[0] + (" Held-out metrics kept improving, so this looks like a harder "
                                             "stretch of data (or a shift in the data mix) more than the optimizer; "
                                             "if it recurs: ")
    peak = f.get("peak_lr")
    txt += f"lower the peak LR (try {_g(peak / 3)} to {_g(peak / 2)})" if peak else "lower the peak LR (by 2-3x)"
    txt += " or decay it sooner"
    if peak and not f.get("warmup_visible"):
        txt += ("; the log shows no LR warmup (the LR is at its peak from the first entry): add a linear warmup over "
                "the first 1-5% of the steps")
    return [txt + "." + (f" ({len(sus)} sustained rises in all.)" if len(sus) > 1 else "")]


def _adv_grad_nan(f, sp, diag, rule):
    nan = f.get("nan_grad_steps") or []
    if not nan:
        return []
    df = diag.entries
    txt = (f"grad_norm is NaN/inf at {len(nan)} logged step(s) ({_step_list(nan)}) while the loss is finite. With "
           "fp16 mixed precision that is the GradScaler at work: it found inf/NaN gradients, skipped that optimizer "
           "step and lowered its loss scale.")
    lr = df["lr"].to_numpy(np.float64) if "lr" in df else None
    if lr is not None and diag.interval == 1:  # only a per-step log shows a scheduler that did not advance
        steps = df["step"].to_numpy()
        idx = [int(np.searchsorted(steps, s)) for s in nan]
        stalled = sum(1 for i in idx if i > 0 and lr[i] == lr[i - 1])
        if stalled:
            txt += f" The LR did not advance at {stalled} of them, which confirms the skipped steps."
    early = max(nan) <= f["first_step"] + 0.1 * (f["last_step"] - f["first_step"])
    txt += (" A few at the very start are the scaler calibrating its scale and are harmless." if early and len(nan) <= 5
            else " Repeated, they mean overflowing gradients: use bf16 if the hardware has it, or lower the LR.")
    return [txt]


def _early_trouble(f, sp) -> str:
    """What went wrong early in the run at a high LR, in words ('' if nothing did)."""
    cut = f["first_step"] + 0.3 * (f["last_step"] - f["first_step"])
    early_grad = [s for s in f.get("grad_spike_steps") or [] if s <= cut]
    grad = (f"grad_norm up to {f['grad_spike_max'] / f['grad_norm_median']:.0f}x its median"
            if early_grad else "")
    noise = f.get("grad_at_spikes") is not None and f["grad_at_spikes"] < 1.3  # that is data noise, see below
    ev = sp[(sp["position"] <= 0.3) & ~(sp["lr_frac"] < 0.5)]
    if len(ev) and not noise:
        last = ev["position"].max()
        words = f"{len(ev)} loss event(s) in the first {last:.0%} of the run (first at step {ev['start_step'].iloc[0]})"
        return words + (f", with {grad}" if grad else "")
    if early_grad:
        s = f["grad_spike_max_step"]
        pos = (s - f["first_step"]) / max(1, f["last_step"] - f["first_step"])
        return f"{grad} at step {s}, {pos:.0%} into the run"
    return ""


def _adv_early(f, sp, diag, rule):
    what = _early_trouble(f, sp)
    if not what or f["near_zero"]:
        return []
    w = f.get("warmup_end_step") if f.get("warmup_visible") else None
    t = f" ({w} steps here: try T = {2 * w}, {4 * w} and {8 * w})" if w else ""
    peak = f.get("peak_lr")
    alt = f" a lower peak LR (e.g. {_g(peak / 2)})" if peak else " a lower peak LR"
    longer = f" (now {w} steps; try {max(2 * w, round(0.05 * f['last_step']))})" if w else ""
    return [f"Early instability at a high learning rate: {what}. That is the regime Sequence Length Warmup (SLW) "
            f"targets ({PAPER}): early in training, long sequences at a large batch and LR give extreme gradient "
            "variance (seen in Adam's variance state) and loss spikes. Train on truncated sequences first: start at "
            "length 8 (64 for billion-parameter models) and grow linearly to the full length over T steps, T a few "
            f"multiples of the LR warmup{t}; keep the largest T whose validation perplexity shows no significant "
            f"fluctuation during the first few multiples of the LR warmup. Otherwise, or as well:{alt} and a longer "
            f"LR warmup{longer}."]


def _grad_spike_words(f, steps) -> str:
    """'grad_norm spiked to 19.3 (16x its median 1.17) at step 10; 12 entries above 5x the median, steps 3-15'."""
    med, top = f["grad_norm_median"], f["grad_spike_max"]
    n = f" ({len(steps)} entries above 5x the median, steps {steps[0]}-{steps[-1]})" if len(steps) > 1 else ""
    at = f["grad_spike_max_step"]
    return f"grad_norm spiked to {_g(top)} ({top / med:.0f}x its median {_g(med)}) at step {at}{n}"


def _adv_grad_spikes(f, sp, diag, rule):
    steps = f.get("grad_spike_steps") or []
    if not steps:
        return []
    w = f.get("warmup_end_step") if f.get("warmup_visible") else None
    soon = w is not None and 0 <= steps[0] - w <= 5 * max(w, 1)
    near = f", just after the LR warmup ended (step {w})" if soon else ""
    return [f"{_grad_spike_words(f, steps)}{near}. Make sure gradient clipping is on (torch.nn.utils.clip_grad_norm_ "
            "at 1.0; HF Trainer: max_grad_norm=1.0 is its default, and it logs the norm before clipping), and "
            "lengthen the LR warmup so the first large updates come later."]


def _adv_grad_cause(f, sp, diag, rule):
    g = f.get("grad_at_spikes")
    finite = sp[sp["kind"] != "nonfinite"]
    if g is None or not len(finite):
        return []
    if g < 1.3:
        bs = f.get("batch_size")
        small = f"; a batch of {bs} per device makes each logged loss a noisy estimate" if bs and bs <= 8 else ""
        mild = (f" Spikes this mild (peak ratio at most {finite['peak_ratio'].max():.2f}) need no optimizer change."
                if (finite["severity"] == "mild").all() else "")
        return [f"At the loss spikes grad_norm was normal (median {g:.2f}x its recent level): the optimizer did not "
                f"blow up, so these spikes most likely come from the data (hard, noisy or mislabeled batches){small}. "
                f"Raise the effective batch (gradient accumulation), shuffle better or inspect the examples at steps "
                f"{_step_list(list(finite['peak_step']))}.{mild}"]
    if g >= 2:
        return [f"grad_norm was {g:.1f}x its recent level at the loss spikes: the spikes come with large gradient "
                "steps (an optimizer instability, not bad data). Clip gradients at 1.0 and lower the peak LR; "
                "grad_norm jumps in the same logged step as the loss, so it is a same-step alarm."]
    return []


def _adv_signal(f, sp, diag, rule):
    top = f.get("top_signal")
    if not top or top["n_events"] < 1 or not np.isfinite(top["auroc"]):
        return []
    h = diag.horizon
    hsteps = f"{int(h * diag.interval)} steps"
    few = f" (only {top['n_events']} events: treat as a hint)" if top["n_events"] < 5 else ""
    if not _warns(top):
        return [f"No logged signal warns reliably before the spikes (best: {top['signal']}, AUROC {top['auroc']:.2f} "
                f"for 'an event within the next {h} entries'){few}."]
    lead = (f", a median {top['median_lead_entries']:.0f} log entries ({top['median_lead_steps']:.0f} steps) ahead"
            if np.isfinite(top["median_lead_entries"]) else "")
    return [f"Best early warning: {top['signal']} ({_VARIANT_WORDS[top['variant']]}) rose above its rolling "
            f"{QUANTILE:.0%} quantile before {top['hit_rate']:.0%} of the events{lead}; AUROC {top['auroc']:.2f} for "
            f"'an event within the next {h} entries ({hsteps})'{few}. Watch it live; when it fires, lower the LR "
            "or stop and restart from a checkpoint."]


def _warns(top) -> bool:
    """A signal counts as an early warning when it separates well and its hits beat chance."""
    return bool(top and top["auroc"] >= 0.7 and top["hit_rate"] >= 0.5 and top["p_value"] < 0.05)


def _adv_near_zero(f, sp, diag, rule):
    if not f["near_zero"]:
        return []
    d = f" and rounded to {f['loss_decimals']} decimals" if f.get("loss_decimals") else ""
    rises = sp.loc[sp["kind"] != "nonfinite", "rise"]
    small = (f" The {len(rises)} events found here rise at most {_g(rises.max())} nats above the earlier minimum."
             if len(rises) else "")
    return [f"The loss is near zero (median {_g(f['median_loss_late'])} nats over the second half{d}), where relative "
            f"thresholds are unreliable: {f['naive_fire_frac']:.0%} of the entries exceed the loss ratio "
            f"{rule.ratio_threshold} on noise alone. Single-entry spikes here count only when they also rise at least "
            f"{rule.min_rise} nats; longer excursions are found by a noise-aware detector on the log loss.{small} "
            "Judge the run by its held-out metrics."]


def _adv_eval(f, sp, diag, rule):
    evals = f.get("evals") or []
    if not evals:
        return []
    words = [f"{e['metric']} {'improved' if e['improved'] else 'got worse'}{' steadily' if e['monotone'] else ''} "
             f"from {_g(e['first'])} to {_g(e['last'])}" for e in evals]
    txt = "Held-out: " + "; ".join(words) + f" over {evals[0]['n']} evaluations"
    if f["eval_improved"]:
        return [txt + (": the training-loss spikes did not hurt held-out performance." if len(sp) else ".")]
    return [txt + ": check for overfitting, or damage from the events above."]


def _adv_memorise(f, sp, diag, rule):
    ep = f.get("epochs")
    if ep is None or not np.isfinite(ep) or ep < 20 or not f["near_zero"]:
        return []
    return [f"The run made about {ep:.0f} passes over its data and the training loss is near zero: the model is "
            "memorising its training set. Fewer epochs, or early stopping on a held-out set, would save compute; at "
            "this loss level, excursions matter only if held-out metrics suffer."]


def _adv_logging(f, sp, diag, rule):
    k = diag.interval
    if k <= 1:
        return []
    return [f"The log has one entry every {k:g} steps. If the logger averages the loss over that interval (HF Trainer "
            f"does), a one-step spike is diluted about {k:g}x and lead times cannot be resolved below {k:g} steps: log "
            "every step (HF: logging_steps=1), or record with gradvar, which keeps every step."]


def _adv_stable(f, sp, diag, rule):
    if len(sp):
        return []
    worst = (f" (its largest rise: {f['max_ratio']:.3f}x its earlier minimum, at step {f['max_ratio_step']})"
             if "max_ratio" in f else "")
    return [f"No spike events: the loss never rose above {rule.ratio_threshold}x its earlier minimum by more than "
            f"{rule.min_rise} nats{worst}. Nothing to fix."]


def _adv_record(f, sp, diag, rule):
    miss = f["missing_signals"]
    what = f" ({', '.join(miss)} are not in this log)" if miss else ""
    return [f"Record more next time{what}: log grad_norm before clipping, every step. The paper's instability "
            "measure is Adam's variance state (max and L1 norm of exp_avg_sq), alongside the gradient variance and "
            "the sequence length; gradvar records all of them with the three lines below (HF Trainer: one callback)."]


def build_summary(diag: Diagnosis, log: LogData) -> str:
    """A short paragraph: what the log is, the run class, the events, the best signal."""
    f, sp = diag.facts, diag.spikes
    fmt = {"hf_trainer_state": "HF trainer_state.json", "tensorboard": "TensorBoard", "gradvar": "gradvar run",
           "csv": "CSV", "jsonl": "JSONL", "dataframe": "DataFrame"}.get(log.fmt, log.fmt)
    head = (f"{Path(log.source).name} ({fmt}): {f['n_entries']} log entries, steps {f['first_step']}-{f['last_step']}, "
            f"{_every(diag.interval)}. Run class: {diag.run_class}.")
    if not len(sp):
        return head + " No spike events."
    kinds = sp["kind"].value_counts()
    words = (("spike", "single spike(s)"), ("sustained_rise", "sustained rise(s)"), ("nonfinite", "NaN/inf event(s)"))
    parts = [f"{kinds.get(k, 0)} {w}" for k, w in words if kinds.get(k, 0)]
    worst = _worst(sp)
    peak = "NaN/inf" if worst["kind"] == "nonfinite" else f"{worst['peak_ratio']:.2f}x its earlier minimum"
    txt = (f"{head} {len(sp)} event(s): {', '.join(parts)}; the largest is a {worst['kind'].replace('_', ' ')} at "
           f"step {worst['peak_step']} ({peak}, {worst['severity']}).")
    g = f.get("grad_at_spikes")
    if g is not None:
        txt += f" grad_norm at the spikes: {g:.2f}x its recent level."
    top = f.get("top_signal")
    if _warns(top):
        txt += f" Best leading signal: {top['signal']} (AUROC {top['auroc']:.2f})."
    elif top:
        txt += " No logged signal reliably leads the spikes."
    return txt


def _worst(sp: pd.DataFrame) -> pd.Series:
    """The event with the largest peak ratio (NaN ratios, from negative losses, count as smallest)."""
    return sp.loc[sp["peak_ratio"].fillna(-math.inf).idxmax()]


def _every(k: float) -> str:
    return "one every step" if k == 1 else f"one every {k:g} steps"


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
