"""Gradient norm before and after clipping, overall and per group; non-finite gradient elements.

Before clipping: the gradient as the step's last backward pass left it (gradvar.pre_clip), whoever clips it
afterwards. After clipping: the gradient the optimizer is handed.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _torch_compat as tc
from .base import SAME, SUM, Quantity, Stat, group_sum


class GradNorm(Quantity):
    name = "grad_norm"
    writes = frozenset({"grad_sq_group", "grad_sq_applied", "nonfinite_grad", "grad_norm_user"})
    columns = frozenset({"grad_norm", "grad_norm_clipped", "nonfinite_grad"})

    def on_grads(self, ctx):
        # g * 0 is NaN exactly where g is non-finite, and the L0 "norm" counts those: two multi-tensor kernels
        bad = torch.stack(tc.foreach_norm(tc.foreach_mul(ctx.grads(), 0.0), 0)).sum().float()
        out = {
            "grad_sq_group": Stat(group_sum(ctx.grad_sq(), ctx.group_index, ctx.n_groups), ctx.shard_op(SUM)),
            "nonfinite_grad": Stat(bad, ctx.shard_op(SUM)),
        }
        applied = ctx.applied_sq()
        if applied is not None:
            out["grad_sq_applied"] = Stat(applied.sum(), ctx.shard_op(SUM))
        return out

    def on_step(self, ctx):
        out = {}
        if ctx.facts.clip_coef is not None and ctx.facts.pre_clip is not None:  # clip_grad_norm_ after the read
            out["grad_sq_applied"] = Stat(ctx.grad_sq().sum() * ctx.facts.clip_coef.float().square(), ctx.shard_op(SUM))
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
        per_group = {(g, "grad_norm"): np.sqrt(gsq[:, i]) for i, g in enumerate(groups)}
        return {
            "grad_norm": norm,
            "grad_norm_clipped": clipped,
            "nonfinite_grad": raw["nonfinite_grad"][:, 0],
        }, per_group
