"""The words of a diagnosis: the plain-English advice list and the summary paragraph.

Text only: every number comes from the Diagnosis that analysis.diagnosis has already computed (its facts, spike
and signal tables), so the detectors and the wording can change independently.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradvar.spikes import SpikeRule

# A signal 'fires' above its rolling QUANTILE of the previous entries: the early-warning rule of the
# correlation study, quoted in the advice.
from ..records.warning import ALARM_Q as QUANTILE
from .events import NOISE_K
from .grad_advice import _adv_grad_cause, _adv_grad_nan, _adv_grad_spikes, _after_init
from .log_advice import (
    _adv_eval,
    _adv_logging,
    _adv_memorise,
    _adv_near_zero,
    _adv_no_loss,
    _adv_record,
    never_finite,
    starts_the_log,
)
from .words import _g, clip_fix

EARLY_FRAC = 0.05
"""Without a visible LR warmup, 'early' is the first 5% of the logged steps (and the advice says so)."""
HUGE_LR = 1.0
"""An LR at or above this is plain SGD's range (the PyTorch LSTM example uses 20): at a NaN in fp32 it is the
first suspect, named before the setup."""

PAPER = (
    'Li, Zhang & He 2022, "The Stability-Efficiency Dilemma: Investigating Sequence Length Warmup for '
    'Training GPT Models"'
)
SNIPPET = (
    'mon = gradvar.Monitor(model, optimizer, "runs/my_run", quantities="paper")\n'
    "...  # after optimizer.step():\n"
    "mon.step(loss=loss)"
)
HF_SNIPPET = 'trainer.add_callback(gradvar.integrations.hf.GradvarCallback("runs/my_run"))'
_VARIANT_WORDS = {
    "raw": "its value",
    "dlog": "its step-to-step change of log",
    "log_ratio_median": "its ratio to its recent median",
}


def build_advice(diag, rule: SpikeRule) -> list:
    """Plain-English advice for a Diagnosis, most important first; each item is one paragraph."""
    f, sp = diag.facts, diag.spikes
    out = []
    for make in (
        _adv_no_loss,
        _adv_resume,
        _adv_divergence,
        _adv_sustained,
        _adv_grad_nan,
        _adv_early,
        _adv_grad_spikes,
        _adv_grad_cause,
        _adv_signal,
        _adv_near_zero,
        _adv_eval,
        _adv_memorise,
        _adv_logging,
        _adv_stable,
        _adv_record,
    ):
        out.extend(make(f, sp, diag, rule))
    return out


def _lr_phrase(ev, f) -> str:
    if f.get("peak_lr") is None or not np.isfinite(ev["lr"]):
        return ""
    return f" The LR there was {_g(ev['lr'])} ({ev['lr_frac']:.0%} of the peak {_g(f['peak_lr'])})."


def _adv_divergence(f, sp, diag, rule):
    out, peak = [], f.get("peak_lr")
    lower = f" (e.g. {_g(peak / 2)})" if peak else ""
    nonfin = sp[sp["kind"] == "nonfinite"]
    lr_first = huge_lr_words(f)
    if len(nonfin) and starts_the_log(nonfin.iloc[0], diag):
        return [never_finite(nonfin.iloc[0], diag, lr_first)]
    if len(nonfin):
        s, ev = f["first_nonfinite_step"], nonfin.iloc[0]
        tail = (
            "and later became finite again (steps were probably skipped)"
            if f["recovered_after_nonfinite"]
            else "and stayed non-finite: the run diverged"
        )
        before = sp[sp["start_step"] < ev["start_step"]]
        warn = (
            f" The loss already spiked {len(before)} time(s) before (first at step {before['start_step'].iloc[0]}):"
            " restart before that first spike."
            if len(before)
            else ""
        )
        fix = (
            f"Restart from the last checkpoint saved before the trouble with the peak LR halved{lower}, "
            f"{clip_fix(f)} and a longer LR warmup."
        )
        if lr_first:
            fix = f"{lr_first} Restart from the last checkpoint before the trouble at a lower LR, with {clip_fix(f)}."
        out.append(f"The loss became NaN/inf at step {s} {tail}.{_lr_phrase(ev, f)}{warn} {fix}")
    ends = sp[(sp["kind"] != "nonfinite") & sp["at_end"].astype(bool)]
    if len(ends) and not len(nonfin):
        ev = ends.iloc[-1]
        out.append(
            f"The loss rose from {_g(ev['ref_loss'])} to {_g(ev['peak_loss'])} ({ev['peak_ratio']:.2f}x) from "
            f"step {ev['start_step']} and had not come back by the last entry (step {ev['end_step']}): the run "
            f"diverged without NaN.{_lr_phrase(ev, f)} Restart from a checkpoint before step {ev['start_step']} "
            f"with a lower peak LR{lower} and {clip_fix(f)}."
        )
    return out


def _adv_sustained(f, sp, diag, rule):
    sus = sp[(sp["kind"] == "sustained_rise") & ~sp["at_end"].astype(bool)]
    if not len(sus):
        return []
    ev = _worst(sus)
    span = int(ev["end_step"] - ev["start_step"] + diag.interval)
    txt = (
        f"Sustained rise: the loss stayed above its best for {ev['n_entries']} log entries (steps {ev['start_step']}"
        f"-{ev['end_step']}, about {span} steps), peaking at {_g(ev['peak_loss'])} at step {ev['peak_step']}, "
        f"{ev['peak_ratio']:.2f}x its earlier minimum {_g(ev['ref_loss'])}, then recovered.{_lr_phrase(ev, f)} "
        "A rise that lasts this long is the optimizer overshooting at this learning rate, not one bad batch: "
    )
    if f.get("eval_improved"):
        txt = txt.split(" A rise that")[0] + (
            " Held-out metrics kept improving, so this looks like a harder "
            "stretch of data (or a shift in the data mix) more than the optimizer; "
            "if it recurs: "
        )
    peak = f.get("peak_lr")
    txt += f"lower the peak LR (try {_g(peak / 3)} to {_g(peak / 2)})" if peak else "lower the peak LR (by 2-3x)"
    txt += " or decay it sooner"
    if peak and not f.get("warmup_visible"):
        txt += (
            "; the log shows no LR warmup (the LR is at its peak from the first entry): add a linear warmup over "
            "the first 1-5% of the steps"
        )
    return [txt + "." + (f" ({len(sus)} sustained rises in all.)" if len(sus) > 1 else "")]


def early_window(f) -> tuple[float, str]:
    """(last step that counts as early, how that was decided): in or near the LR warmup when the log shows one
    (up to one warmup length past its end), else the first EARLY_FRAC of the steps, saying why."""
    first, w = f["first_step"], f.get("warmup_end_step") if f.get("warmup_visible") else None
    if w is not None:
        cut = w + max(w - first, 1)
        return cut, f"in or near the LR warmup (it ends at step {w}; events up to step {cut} count)"
    cut = first + EARLY_FRAC * (f["last_step"] - first)
    why = "the LR starts at its peak" if f.get("peak_lr") is not None else "no LR in the log, so no warmup to go by"
    return cut, f"in the first {EARLY_FRAC:.0%} of the steps (up to step {cut:.0f}; {why})"


def _early_trouble(f, sp) -> str:
    """What went wrong early in the run (in or near the LR warmup) at a high LR, in words ('' if nothing did)."""
    cut, where = early_window(f)
    early_grad = [s for s in _after_init(f, f.get("grad_spike_steps") or []) if s <= cut]
    grad = f"grad_norm up to {f['grad_spike_max'] / f['grad_norm_median']:.0f}x its median" if early_grad else ""
    # Isolated spikes with a normal gradient are data noise (see _adv_grad_cause); rises that last are not.
    noise = f.get("grad_at_spikes") is not None and f["grad_at_spikes"] < 1.3 and (sp["kind"] == "spike").all()
    ev = sp[sp["start_step"] <= cut]
    if len(ev) and not noise:
        words = f"{len(ev)} loss event(s) {where}, the first at step {ev['start_step'].iloc[0]}"
        return words + (f", with {grad}" if grad else "")
    return ""


def _adv_early(f, sp, diag, rule):
    kind = f.get("run_kind") or {}
    # SLW and LR warmup are pre-training remedies: a fine-tune's early trouble gets the advice that fits it.
    what = _early_trouble(f, sp) if kind.get("kind") == "from_scratch" else ""
    if not what or f["near_zero"]:
        return []
    what += f" (a run from scratch: {kind['evidence'][0]})"
    w = f.get("warmup_end_step") if f.get("warmup_visible") else None
    t = f" ({w} steps here: try T = {2 * w}, {4 * w} and {8 * w})" if w else ""
    peak = f.get("peak_lr")
    alt = f" a lower peak LR (e.g. {_g(peak / 2)})" if peak else " a lower peak LR"
    longer = f" (now {w} steps; try {max(2 * w, round(0.05 * f['last_step']))})" if w else ""
    if f.get("seq_axis") is False:
        # An RNN unrolled over a fixed length (or any model without a sequence axis) has no length to warm up.
        return [
            f"Early instability at a high learning rate: {what}. The model has no sequence-length axis to "
            f"shorten ({f['seq_axis_source']}), so the remedies are the LR's:{alt} and a longer LR warmup{longer}."
        ]
    return [
        f"Early instability at a high learning rate: {what}. That is the regime Sequence Length Warmup (SLW) "
        f"targets ({PAPER}): early in training, long sequences at a large batch and LR give extreme gradient "
        "variance (seen in Adam's variance state) and loss spikes. Train on truncated sequences first: start at "
        "length 8 (64 for billion-parameter models) and grow linearly to the full length over T steps, T a few "
        f"multiples of the LR warmup{t}; keep the largest T whose validation perplexity shows no significant "
        f"fluctuation during the first few multiples of the LR warmup. Otherwise, or as well:{alt} and a longer "
        f"LR warmup{longer}."
    ]


def huge_lr_words(f) -> str:
    """For an fp32 run at an LR >= HUGE_LR: the LR named as the first suspect ('' otherwise)."""
    peak = f.get("peak_lr")
    if peak is None or not np.isfinite(peak) or peak < HUGE_LR or f.get("precision") == "mixed":
        return ""
    return (
        f"The LR is the first suspect: {_g(peak)} (at or above {HUGE_LR:g}, plain SGD's range) in fp32 "
        f"({f.get('precision_source', 'no mixed precision in the log')}), where no loss scale can overflow. Lower it "
        f"(try {_g(peak / 4)}) before looking at the setup."
    )


def _adv_signal(f, sp, diag, rule):
    top = f.get("top_signal")
    if not top or top["n_events"] < 1 or not np.isfinite(top["auroc"]):
        return []
    h = diag.horizon
    hsteps = f"{int(h * diag.interval)} steps"
    few = f" (only {top['n_events']} events: treat as a hint)" if top["n_events"] < 5 else ""
    if not _warns(top):
        return [
            f"No logged signal warns reliably before the spikes (best: {top['signal']}, AUROC {top['auroc']:.2f} "
            f"for 'an event within the next {h} entries'){few}."
        ]
    lead = (
        f", a median {top['median_lead_entries']:.0f} log entries ({top['median_lead_steps']:.0f} steps) ahead"
        if np.isfinite(top["median_lead_entries"])
        else ""
    )
    return [
        f"Best early warning: {top['signal']} ({_VARIANT_WORDS[top['variant']]}) rose above its rolling "
        f"{QUANTILE:.0%} quantile before {top['hit_rate']:.0%} of the events{lead}; AUROC {top['auroc']:.2f} for "
        f"'an event within the next {h} entries ({hsteps})'{few}. Watch it live; when it fires, lower the LR "
        "or stop and restart from a checkpoint."
    ]


def _warns(top) -> bool:
    """A signal counts as an early warning when it separates well and its hits beat chance."""
    return bool(top and top["auroc"] >= 0.7 and top["hit_rate"] >= 0.5 and top["p_value"] < 0.05)


def _adv_stable(f, sp, diag, rule):
    if len(sp) or f.get("no_loss_all"):
        return []
    sub = f.get("sub_floor_rise")
    note = (
        f" One relative rise is left out: steps {sub['start_step']}-{sub['end_step']}, {sub['ratio']:.1f}x its "
        f"earlier level but only +{sub['rise']:.3g} in the loss, under the {rule.min_rise}-nat floor (pass a "
        "smaller --min-rise to count it)."
        if sub
        else ""
    )
    return [
        f"No loss events: no entry rose above its recent level by {NOISE_K:g} of this log's noise scales and by "
        f"{rule.min_rise} nats (and {rule.ratio_threshold}x its running minimum).{note}"
    ]


RESUME_CAUSE = (
    "optimizer state (Adam's moments, or only its step counter: moments restored with the counter at 0 are "
    "bias-corrected as if new, which scales the first update by (1/(1-beta1))/sqrt(1/(1-beta2)), 2.24x for "
    "betas (0.9, 0.95)) or the data position not restored (load the optimizer and LR-scheduler state with the "
    "weights, and skip the batches already seen)"
)


def _adv_resume(f, sp, diag, rule):
    """An event in the first entries after a resume points at the resume, not at the optimization."""
    out = []
    for r in f.get("resume_steps") or []:
        ev = _event_after(sp, r, f)
        if ev is not None:
            out.append(
                f"The event at step {ev['start_step']} ({_event_words(ev)}) comes right after the resume at step "
                f"{r}: the likely cause is {RESUME_CAUSE}, not the learning rate."
            )
    late = f.get("late_start_step")
    ev = _event_after(sp, late, f) if late is not None else None
    if ev is not None:
        n = int(ev["start_step"] - late)
        out.append(
            f"This log starts at step {late}, not at the run's start: it continues an earlier run, or is an "
            f"excerpt of one. The event at step {ev['start_step']} ({_event_words(ev)}) comes {n} step"
            f"{'' if n == 1 else 's'} after that first entry. If the run resumed at step {late}, look first at "
            f"{RESUME_CAUSE}, then at the learning rate. Evidence: only the first logged step; the log itself "
            "marks no resume (no step repeated)."
        )
    return out


def _event_after(sp: pd.DataFrame, step: int, f):
    """The first event starting within three logging intervals after `step`, or None."""
    hit = sp[(sp["start_step"] >= step) & (sp["start_step"] <= step + 3 * f["interval"])]
    return hit.iloc[0] if len(hit) else None


def _event_words(ev) -> str:
    g = f", with grad_norm {ev['grad_norm_rel']:.0f}x its recent level" if ev["grad_norm_rel"] > 2 else ""
    return f"{ev['peak_ratio']:.2f}x its level before{g}"


def _worst(sp: pd.DataFrame) -> pd.Series:
    """The event with the largest rise (NaN/inf first; NaN rises, from negative losses, count as smallest)."""
    key = np.where(sp["kind"] == "nonfinite", math.inf, sp["rise"].fillna(-math.inf))
    return sp.iloc[int(np.argmax(key))]
