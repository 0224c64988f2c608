"""The step's gradient before clipping and unscaling, from the capture's read at the end of the last pass.

Loops change `.grad` between the last backward and the optimizer's update: torch's `clip_grad_norm_`, a
GradScaler's `unscale_`, Lightning's clipping inside the closure it passes to `optimizer.step`. The capture
reads |grad|^2 per parameter as the last pass left it (`GradCapture.end_read`); here that read becomes
- `grad_sq`: (n_params,) |G|^2 per parameter in true units (the loss scale S divided out), before clipping;
- `applied_sq`: |grad|^2 per parameter as the optimizer is handed it (None: equal to grad_sq);
- `factor`: what turns today's `.grad` into G, elementwise (None: 1; a scalar tensor; or (n_params,)).
A uniform change (clipping, unscaling) is undone exactly; `.grad` changed otherwise gives NaN factors for the
parameters whose gradient vanished (the element-wise variance is then NaN, never a wrong number). A read
the capture lost (it was due when `.grad` had changed already) gives NaN for every parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _torch_compat as tc
from .sharded import local


@dataclass(frozen=True)
class PreClip:
    grad_sq: torch.Tensor
    applied_sq: torch.Tensor | None = None
    factor: torch.Tensor | None = None
    applied_unknown: bool = False
    """No optimizer step ran and the loop changed `.grad` since the last pass (zero_grad after a GradScaler's
    skip): `.grad` is not what the optimizer was handed, and applied_sq is not its norm."""


def _norms_sq(params) -> torch.Tensor:
    gs = [local(p.grad) if p.grad is not None else torch.zeros(1, device=p.device) for p in params]
    return torch.stack(tc.foreach_norm(gs, 2, dtype=torch.float32)).square()


def pre_clip(
    capture, params, scale: torch.Tensor | None, unscaled_now: bool, clip_coef: torch.Tensor | None
) -> PreClip:
    """scale: the loss scale of the step's passes (None without a GradScaler); unscaled_now: the scaler has
    divided it out of `.grad` since; clip_coef: Monitor.clip_grad_norm_'s factor, the only change since the
    last pass when `capture.modified_since_end()` is False."""
    end = capture.end_read(unscaled_now)
    if capture.lost:  # the pass's gradient is gone: NaN, never the changed one
        nan = torch.full((len(params),), torch.nan, device=capture.params[0].device)
        return PreClip(nan, None, nan)
    if end is None:  # no backward pass seen (gradients set by hand): `.grad` is all there is
        now = _norms_sq(params)
        return PreClip(now / scale.float().square() if scale is not None and not unscaled_now else now)
    inv = None if scale is None else scale.float().reciprocal()
    grad_sq = end if inv is None or capture.end_unscaled else end * inv.square()
    if not capture.modified_since_end():
        # today's .grad = end-of-pass .grad x (1/S if unscaled since) x (clip coefficient if clipped)
        factor = inv if inv is not None and not unscaled_now else None
        if clip_coef is None:
            return PreClip(grad_sq, None, factor)
        undo = clip_coef.float().reciprocal()
        return PreClip(grad_sq, grad_sq * clip_coef.float().square(), undo if factor is None else undo * factor)
    now = _norms_sq(params)
    if inv is not None and not unscaled_now:
        now = now * inv.square()
    with torch.no_grad():
        factor = torch.where(now > 0, (grad_sq / now).sqrt(), torch.where(grad_sq > 0, torch.nan, 1.0))
        if inv is not None and not unscaled_now:
            factor = factor * inv
    return PreClip(grad_sq, now, factor)
