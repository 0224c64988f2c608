"""One small class per measured quantity; `build(preset, ...)` assembles the named presets."""
from __future__ import annotations

from .adam_state import AdamState
from .base import FlushMeta, Quantity, Stat, StepContext, at_steps, dense_then_every, every, log_spaced
from .grad_norm import GradNorm
from .grad_variance import GradVariance, noise_estimates
from .logits import OutputLogit
from .loss import Loss
from .probe import ProbeLoss, SeqlenProbe, causal_lm_loss
from .update_size import UpdateSize

PRESETS = ("paper", "full", "minimal")


def build(preset: str, probe_batch=None, probe_every: int = 100, probe_loss_every: int = 10,
          probe_micro_batch: int = 1, probe_seqlens=None, loss_fn=causal_lm_loss) -> list[Quantity]:
    """paper: loss, Adam variance state, gradient variance, grad norm (+ probe loss with a probe batch).
    full: everything, the sequence-length probe, update size and logit maxima included.
    minimal: loss only."""
    if preset not in PRESETS:
        raise ValueError(f"unknown quantities preset {preset!r}; choose one of {PRESETS}")
    if preset == "minimal":
        return [Loss()]
    qs: list[Quantity] = [Loss(), GradNorm(), GradVariance(), AdamState()]
    full = preset == "full"
    if full:
        qs += [UpdateSize(), OutputLogit()]
    if probe_batch is not None:
        qs.append(ProbeLoss(probe_batch, dense_then_every(probe_loss_every, 30), loss_fn, attention_logits=full))
        if full:
            qs.append(SeqlenProbe(probe_batch, probe_seqlens, probe_micro_batch, every(probe_every), loss_fn))
    return qs


__all__ = [
    "AdamState", "FlushMeta", "GradNorm", "GradVariance", "Loss", "OutputLogit", "ProbeLoss", "Quantity",
    "SeqlenProbe", "Stat", "StepContext", "UpdateSize", "at_steps", "build", "causal_lm_loss",
    "dense_then_every", "every", "log_spaced", "noise_estimates",
]
