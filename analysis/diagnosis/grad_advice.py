"""The advice on gradients: NaN/inf norms (a GradScaler skipping steps), norm spikes, and what the norm at
the loss spikes says about their cause (bad batches or an optimizer instability). Text only, like
analysis.diagnosis.advice."""

from __future__ import annotations

import numpy as np

from .words import _g, _step_list


def _adv_grad_nan(f, sp, diag, rule):
    nan = f.get("nan_grad_steps") or []
    if not nan:
        return []
    df = diag.entries
    txt = (
        f"grad_norm is NaN/inf at {len(nan)} logged step(s) ({_step_list(nan)}) while the loss is finite. With "
        "fp16 mixed precision that is the GradScaler at work: it found inf/NaN gradients, skipped that optimizer "
        "step and lowered its loss scale."
    )
    lr = df["lr"].to_numpy(np.float64) if "lr" in df else None
    if lr is not None and diag.interval == 1:  # only a per-step log shows a scheduler that did not advance
        steps = df["step"].to_numpy()
        idx = [int(np.searchsorted(steps, s)) for s in nan]
        stalled = sum(1 for i in idx if i > 0 and lr[i] == lr[i - 1])
        if stalled:
            txt += f" The LR did not advance at {stalled} of them, which confirms the skipped steps."
    early = max(nan) <= f["first_step"] + 0.1 * (f["last_step"] - f["first_step"])
    txt += (
        " A few at the very start are the scaler calibrating its scale and are harmless."
        if early and len(nan) <= 5
        else " Repeated, they mean overflowing gradients: use bf16 if the hardware has it, or lower the LR."
    )
    return [txt]


def _after_init(f, steps) -> list:
    """Steps past the first two entries: a large gradient at step 0-1 is initialisation, not instability."""
    return [s for s in steps if s > f["first_step"] + 2 * f["interval"]]


def _grad_spike_words(f, steps) -> str:
    """'grad_norm spiked to 19.3 (16x its median 1.17) at step 10; 12 entries above 5x the median, steps 3-15'."""
    med, top = f["grad_norm_median"], f["grad_spike_max"]
    n = f" ({len(steps)} entries above 5x the median, steps {steps[0]}-{steps[-1]})" if len(steps) > 1 else ""
    at = f["grad_spike_max_step"]
    return f"grad_norm spiked to {_g(top)} ({top / med:.0f}x its median {_g(med)}) at step {at}{n}"


def _adv_grad_spikes(f, sp, diag, rule):
    steps = _after_init(f, f.get("grad_spike_steps") or [])
    if not steps:
        return []
    w = f.get("warmup_end_step") if f.get("warmup_visible") else None
    soon = w is not None and 0 <= steps[0] - w <= 5 * max(w, 1)
    near = f", just after the LR warmup ended (step {w})" if soon else ""
    clip = f.get("clipping")
    fix = (
        f"Clipping is on ({clip}), so these updates were capped; if the loss suffers at these steps, lower the "
        "clipping threshold or the peak LR,"
        if clip
        else "Make sure gradient clipping is on (torch.nn.utils.clip_grad_norm_ at 1.0; HF Trainer: "
        "max_grad_norm=1.0 is its default, and it logs the norm before clipping),"
    )
    return [
        f"{_grad_spike_words(f, steps)}{near}. {fix} and lengthen the LR warmup so the first large updates come later."
    ]


def _adv_grad_cause(f, sp, diag, rule):
    g = f.get("grad_at_spikes")
    finite = sp[sp["kind"] == "spike"]
    if g is None or not len(finite) or diag.run_class == "diverged":  # a diverging run is not 'bad batches'
        return []
    if g < 1.3:
        bs = f.get("batch_size")
        small = f"; a batch of {bs} per device makes each logged loss a noisy estimate" if bs and bs <= 8 else ""
        mild = (
            f" Spikes this mild (peak ratio at most {finite['peak_ratio'].max():.2f}) need no optimizer change."
            if (finite["severity"] == "mild").all()
            else ""
        )
        return [
            f"At the loss spikes grad_norm was normal (median {g:.2f}x its recent level): the optimizer did not "
            f"blow up, so these spikes most likely come from the data (hard, noisy or mislabeled batches){small}. "
            f"Raise the effective batch (gradient accumulation), shuffle better or inspect the examples at steps "
            f"{_step_list(list(finite['peak_step']))}.{mild}"
        ]
    if g >= 2:
        return [
            f"grad_norm was {g:.1f}x its recent level at the loss spikes: the spikes come with large gradient "
            f"steps (an optimizer instability, not bad data). {_clip_then_lr(f)}; "
            "grad_norm jumps in the same logged step as the loss, so it is a same-step alarm."
        ]
    return []


def _clip_then_lr(f) -> str:
    clip = f.get("clipping")
    return (
        f"Clipping is on ({clip}): lower the peak LR or the clipping threshold"
        if clip
        else ("Clip gradients at 1.0 and lower the peak LR")
    )
