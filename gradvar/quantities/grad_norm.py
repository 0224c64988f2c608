"""Gradient norm before and after clipping, overall and per group; non-finite gradient elements.

Before clipping: the gradient as the step's last backward pass left it (gradvar.pre_clip), whoever clips it
afterwards. After clipping: the gradient the optimizer is handed.

The non-finite count is of the gradient the last pass left, read from `.grad` when the monitor reads the step.
A loop may have changed `.grad` by then. Clipping and unscaling multiply by a finite factor, which keeps every
element's finiteness (x 0 too: inf becomes NaN, a finite number 0), except torch's clipping of a NaN norm, which
multiplies by NaN; zero_grad(set_to_none=False) zeroes it. So where `.grad` changed since the last pass, a
parameter whose pre-clip norm is finite counts 0 (it has no non-finite element), the others count what `.grad`
shows now, and the step is NaN with a note when that cannot be the count: the pre-clip norm is NaN (or the read
was lost), or it is infinite and `.grad` now shows no non-finite element.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _torch_compat as tc
from .base import MAX, SAME, SUM, Quantity, Stat, group_sum


class GradNorm(Quantity):
    name = "grad_norm"
    writes = frozenset({"grad_sq_group", "grad_sq_applied", "grad_applied_unknown", "nonfinite_grad", "grad_norm_user"})
    columns = frozenset({"grad_norm", "grad_norm_clipped", "nonfinite_grad"})

    def on_grads(self, ctx):
        now = nonfinite_now(ctx.grads(), ctx.grad_sq())
        bad = nonfinite_count(now, ctx.grad_sq()) if ctx.capture.modified_since_end() else now.sum()
        out = {
            "grad_sq_group": Stat(group_sum(ctx.grad_sq(), ctx.group_index, ctx.n_groups), ctx.shard_op(SUM)),
            "nonfinite_grad": Stat(bad, ctx.shard_op(SUM)),
        }
        applied = ctx.applied_sq()
        if ctx.facts.pre_clip.applied_unknown:
            out["grad_applied_unknown"] = Stat(torch.ones((), device=ctx.group_index.device), MAX)
        elif applied is not None:
            out["grad_sq_applied"] = Stat(applied.sum(), ctx.shard_op(SUM))
        return out

    def notes(self, raw):
        bad, k = raw.get("nonfinite_grad"), raw.get("_k_local")
        if bad is None or k is None or not (np.isnan(bad[:, 0]) & (k[:, 0] > 0)).any():
            return []
        return [
            (
                "nonfinite_grad_unknown",
                "nonfinite_grad is NaN at steps whose gradient the loop changed before the monitor read it in a "
                "way that hides the count: a NaN gradient norm under torch's clip_grad_norm_ (which then "
                "multiplies every element by NaN), zero_grad before Monitor.step, or a lost read; clip with "
                "Monitor.clip_grad_norm_, which reads first, and call Monitor.step before zero_grad",
            )
        ]

    def on_step(self, ctx):
        out = {}
        coef, base = ctx.facts.clip_coef, ctx.facts.clip_base_sq
        if coef is not None and ctx.facts.pre_clip is not None:  # Monitor.clip_grad_norm_ after the read
            base = ctx.grad_sq() if base is None else base  # .grad as the read saw it, or as the loop left it
            out["grad_sq_applied"] = Stat(base.sum() * coef.float().square(), ctx.shard_op(SUM))
        if ctx.facts.grad_norm_user is not None:
            out["grad_norm_user"] = Stat(ctx.facts.grad_norm_user, SAME)
        return out

    def finalize(self, raw, meta, groups):
        if "grad_sq_group" not in raw:
            return {}, {}
        gsq = raw["grad_sq_group"]  # (n_steps, n_groups)
        norm = np.sqrt(gsq.sum(axis=1))
        if "grad_norm_user" in raw:
            user = raw["grad_norm_user"][:, 0]
            norm = np.where(np.isnan(user), norm, user)
        applied = raw["grad_sq_applied"][:, 0] if "grad_sq_applied" in raw else np.full(len(norm), np.nan)
        clipped = np.where(np.isnan(applied), norm, np.sqrt(applied))
        if "grad_applied_unknown" in raw:  # no update, and .grad changed before the read: NaN, never its zeros
            clipped = np.where(raw["grad_applied_unknown"][:, 0] == 1, np.nan, clipped)
        per_group = {(g, "grad_norm"): np.sqrt(gsq[:, i]) for i, g in enumerate(groups)}
        return {
            "grad_norm": norm,
            "grad_norm_clipped": clipped,
            "nonfinite_grad": raw["nonfinite_grad"][:, 0],
        }, per_group


def nonfinite_now(grads: list[torch.Tensor], pre_sq: torch.Tensor) -> torch.Tensor:
    """(n_params,) float32: the non-finite elements `.grad` shows now, for every parameter whose pre-clip |G|^2
    is not finite. Where it is finite the gradient had no non-finite element (a norm of finite elements is
    finite or, overflowing, +inf: never NaN, and never finite with an inf or NaN element), so its count is 0
    unchanged and unused by `nonfinite_count` after a change. g * 0 is NaN exactly where g is non-finite, and
    the L0 "norm" counts those: two multi-tensor kernels over every gradient on an accelerator (no sync); on
    the CPU, where the host reads the norms for free, only the parameters whose norm is not finite."""
    if not tc.host_reads_free(pre_sq):
        return torch.stack(tc.foreach_norm(tc.foreach_mul(grads, 0.0), 0)).float()
    now = torch.zeros(len(grads), dtype=torch.float32, device=pre_sq.device)
    suspect = (~torch.isfinite(pre_sq)).nonzero().flatten().tolist()
    if suspect:
        counts = tc.foreach_norm(tc.foreach_mul([grads[i] for i in suspect], 0.0), 0)
        now[suspect] = torch.stack(counts).float()
    return now


def nonfinite_count(now: torch.Tensor, pre_sq: torch.Tensor) -> torch.Tensor:
    """Non-finite elements of the gradient the last pass left, from the per-parameter counts `.grad` shows `now`
    after the loop changed it, and the per-parameter pre-clip |G|^2 (NaN where the read was lost); NaN when the
    count cannot be known (see the module's docstring). On the device: no sync."""
    total = pre_sq.sum()
    count = torch.where(torch.isfinite(pre_sq), 0.0, now).sum()
    unknown = torch.isnan(total) | (~torch.isfinite(total) & (count == 0))
    return torch.where(unknown, torch.nan, count)
