"""Advice about the log itself rather than its events: logging interval, a loss near zero, the eval trend,
memorisation, a loss that is never finite, and which signals to record next time."""

from __future__ import annotations

import numpy as np

from .words import _g


def starts_the_log(ev, diag) -> bool:
    """Whether a non-finite event starts at the log's first entry (nothing finite comes before it)."""
    return len(diag.entries) > 0 and ev["start_step"] == diag.entries["step"].iloc[0]


def never_finite(ev, diag, lr_first: str = "") -> str:
    """Advice for a loss that is NaN/inf from the first entry: a broken setup, not a late instability (unless an
    fp32 run at a huge LR: then `lr_first`, the LR's words, come first)."""
    n = int(np.isfinite(diag.entries["loss"]).sum())
    fin = "is never finite" if n == 0 else f"is finite at only {n} later entr{'y' if n == 1 else 'ies'}"
    if lr_first:
        return (
            f"The loss is NaN/inf from the first logged entry (step {ev['start_step']}) and {fin}. {lr_first} "
            "If it is still NaN at a small LR, check that the weights loaded and the first batches (empty or "
            "all-padding targets)."
        )
    return (
        f"The loss is NaN/inf from the first logged entry (step {ev['start_step']}) and {fin}: there is no "
        "healthy stretch to compare with, so this is not a spike the LR caused later in the run. Check the "
        "setup first: that the weights loaded, the first batches (empty or all-padding targets), and the "
        "precision (run a few steps in fp32); the LR only if the fp32 loss is finite."
    )


def _adv_near_zero(f, sp, diag, rule):
    if not f["near_zero"]:
        return []
    d = f" and rounded to {f['loss_decimals']} decimals" if f.get("loss_decimals") else ""
    rises = sp.loc[sp["kind"] != "nonfinite", "rise"]
    small = (
        f" The {len(rises)} events found here rise at most {_g(rises.max())} nats above the earlier minimum."
        if len(rises)
        else ""
    )
    return [
        f"The loss is near zero (median {_g(f['median_loss_late'])} nats over the second half{d}), where relative "
        f"thresholds are unreliable: {f['naive_fire_frac']:.0%} of the entries exceed the loss ratio "
        f"{rule.ratio_threshold} on noise alone. Single-entry spikes here count only when they also rise at least "
        f"{rule.min_rise} nats; longer excursions are found by a noise-aware detector on the log loss.{small} "
        "Judge the run by its held-out metrics."
    ]


def _adv_eval(f, sp, diag, rule):
    evals = f.get("evals") or []
    if not evals:
        return []
    words = [
        f"{e['metric']} {'improved' if e['improved'] else 'got worse'}{' steadily' if e['monotone'] else ''} "
        f"from {_g(e['first'])} to {_g(e['last'])}"
        for e in evals
    ]
    txt = "Held-out: " + "; ".join(words) + f" over {evals[0]['n']} evaluations"
    if f["eval_improved"]:
        return [txt + (": the training-loss spikes did not hurt held-out performance." if len(sp) else ".")]
    return [txt + ": check for overfitting, or damage from the events above."]


def _adv_memorise(f, sp, diag, rule):
    ep = f.get("epochs")
    if ep is None or not np.isfinite(ep) or ep < 20 or not f["near_zero"]:
        return []
    return [
        f"The run made about {ep:.0f} passes over its data and the training loss is near zero: the model is "
        "memorising its training set. Fewer epochs, or early stopping on a held-out set, would save compute; at "
        "this loss level, excursions matter only if held-out metrics suffer."
    ]


def _adv_logging(f, sp, diag, rule):
    k = diag.interval
    if k <= 1:
        return []
    return [
        f"The log has one entry every {k:g} steps. If the logger averages the loss over that interval (HF Trainer "
        f"does), a one-step spike is diluted about {k:g}x and lead times cannot be resolved below {k:g} steps: log "
        "every step (HF: logging_steps=1), or record with gradvar, which keeps every step."
    ]


def needs_recording(f: dict) -> bool:
    """The log lacks signals gradvar records and is no gradvar run: say how to record them."""
    return bool(f.get("missing_signals", True)) and f.get("fmt") != "gradvar"


def _adv_record(f, sp, diag, rule):
    miss = f["missing_signals"]
    if needs_recording(f):
        # A log that already has grad_norm is not asked for it again.
        ask = ": log grad_norm before clipping, every step." if "grad_norm" in miss else "."
        return [
            f"Record more next time ({', '.join(miss)} are not in this log){ask} The paper's instability "
            "measure is Adam's variance state (max and L1 norm of exp_avg_sq), alongside the gradient variance "
            "and the sequence length; gradvar records all of them "
            "with the three lines below (HF Trainer: one callback)."
        ]
    if f.get("fmt") == "gradvar" and "grad_noise_scale" in miss:  # a gradvar run: only these can be empty
        return [
            "The gradient-noise columns (grad_trace_sigma, grad_true_sq, grad_noise_scale) are empty: they need "
            "K >= 2 micro-batches per optimizer step (gradient accumulation, or DDP ranks)."
        ]
    return []


NO_LOSS_COLUMNS = ("grad_norm", "adam_v_max", "adam_v_l1", "update_rms")


def _adv_no_loss(f, sp, diag, rule):
    """A gradvar run whose loss never reached the monitor: say so first, then what the other columns show."""
    n = f.get("no_loss_entries")
    if not n:
        return []
    scope = f"every step ({n})" if f.get("no_loss_all") else f"{n} steps (left out of the loss analysis)"
    txt = (
        "No loss recorded: pass `mon.step(loss=...)`. The records hold gradvar's note that no loss reached the "
        f"monitor, and the loss column is empty at {scope}: a loss not given, not a NaN loss, so nothing here says "
        "the run diverged."
    )
    cols = [c for c in NO_LOSS_COLUMNS if c in (f.get("columns") or {})]
    if cols:
        txt += " The other columns: " + "; ".join(_column_words(c, f["columns"][c]) for c in cols) + "."
    return [txt]


def _column_words(name: str, c: dict) -> str:
    bad = f", NaN/inf at {c['n_nonfinite']} entries" if c["n_nonfinite"] else ", finite at every entry"
    return (
        f"{name} median {_g(c['median'])}, max {_g(c['max'])} at step {c['max_step']} "
        f"({c['max'] / c['median']:.1f}x the median){bad}"
        if c["median"] > 0
        else f"{name} max {_g(c['max'])} at step {c['max_step']}{bad}"
    )
