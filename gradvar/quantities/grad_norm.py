"""Gradient norm before and after clipping, overall and per group; non-finite gradient elements."""
from __future__ import annotations

import numpy as np
import torch

from .base import SAME, SUM, Quantity, Stat, group_sum


class GradNorm(Quantity):
    """Reads `.grad` once it holds the step's gradient and before clipping (see Monitor.clip_grad_norm_)."""

    name = "grad_norm"

    def on_grads(self, ctx):
        # g * 0 is NaN exactly where g is non-finite, and the L0 "norm" counts those: two multi-tensor kernels
        bad = torch.stack(torch._foreach_norm(torch._foreach_mul(ctx.grads(), 0.0), 0)).sum().float()
        return {
            "grad_sq_group": Stat(group_sum(ctx.grad_sq(), ctx.group_index, ctx.n_groups), ctx.shard_op(SUM)),
            "nonfinite_grad": Stat(bad, ctx.shard_op(SUM)),
        }

    def on_step(self, ctx):
        out = {}
        if "clip_coef" in ctx.extras:
            out["clip_coef"] = Stat(ctx.extras["clip_coef"], SAME)
        if "grad_norm_user" in ctx.extras:
            out["grad_norm_user"] = Stat(ctx.extras["grad_norm_user"], SAME)
        return out

    def finalize(self, raw, meta, groups):
        if "grad_sq_group" not in raw:
            return {}, {}
        gsq = raw["grad_sq_group"]  # (n_steps, n_groups)
        norm = np.sqrt(gsq.sum(axis=1))
        if "grad_norm_user" in raw:
            user = raw["grad_norm_user"][:, 0]
            norm = np.where(np.isnan(user), norm, user)
        coef = raw["clip_coef"][:, 0] if "clip_coef" in raw else np.full(len(norm), np.nan)
        clipped = np.where(np.isnan(coef), norm, norm * np.minimum(coef, 1.0))
        per_group = {(g, "grad_norm"): np.sqrt(gsq[:, i]) for i, g in enumerate(groups)}
        return {"grad_norm": norm, "grad_norm_clipped": clipped, "nonfinite_grad": raw["nonfinite_grad"][:, 0]}, per_group
