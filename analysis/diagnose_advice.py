"""The words of a diagnosis: the plain-English advice list and the summary paragraph.

Text only: every number comes from the Diagnosis that analysis.diagnose has already computed (its facts, spike
and signal tables). Kept apart so the detectors and the wording can change independently; this module never
imports analysis.diagnose (which imports it), so a Diagnosis is only ever passed in.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from gradvar.spikes import SpikeRule

from .logs import LogData
# A signal 'fires' above its rolling QUANTILE of the previous entries: the early-warning rule of the
# correlation study, quoted in the advice.
from .warning import ALARM_Q as QUANTILE


PAPER = ('Li, Zhang & He 2022, "The Stability-Efficiency Dilemma: Investigating Sequence Length Warmup for '
         'Training GPT Models"')
SNIPPET = ('mon = gradvar.Monitor(model, optimizer, "runs/my_run", quantities="paper")\n'
           '...  # after optimizer.step():\n'
           'mon.step(loss=loss)')
HF_SNIPPET = 'trainer.add_callback(gradvar.integrations.hf.GradvarCallback("runs/my_run"))'
_VARIANT_WORDS = {"raw": "its value", "dlog": "its step-to-step change of log",
                  "log_ratio_median": "its ratio to its recent median"}


def build_advice(diag, rule: SpikeRule) -> list:
    """Plain-English advice for a Diagnosis, most important first; each item is one paragraph."""
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


def needs_recording(f: dict) -> bool:
    """The log lacks signals gradvar records and is no gradvar run: say how to record them."""
    return bool(f.get("missing_signals", True)) and f.get("fmt") != "gradvar"


def _adv_record(f, sp, diag, rule):
    miss = f["missing_signals"]
    if needs_recording(f):
        return [f"Record more next time ({', '.join(miss)} are not in this log): log grad_norm before clipping, "
                "every step. The paper's instability measure is Adam's variance state (max and L1 norm of "
                "exp_avg_sq), alongside the gradient variance and the sequence length; gradvar records all of them "
                "with the three lines below (HF Trainer: one callback)."]
    if f.get("fmt") == "gradvar" and "grad_noise_scale" in miss:  # a gradvar run: only these can be empty
        return ["The gradient-noise columns (grad_trace_sigma, grad_true_sq, grad_noise_scale) are empty: they need "
                "K >= 2 micro-batches per optimizer step (gradient accumulation, or DDP ranks)."]
    return []


def build_summary(diag, log: LogData) -> str:
    """A short paragraph about a Diagnosis: what the log is, the run class, the events, the best signal."""
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
