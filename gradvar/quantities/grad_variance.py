"""Between-micro-batch gradient variance: tr(Sigma), |G|^2 and B_simple (McCandlish et al. 2018), and the
element-wise variance across micro-batches.

With K micro-batches of B_s sequences (B_b = K * B_s), |G_s|^2 = mean_k |g_k|^2 and |G_b|^2 = |G|^2:
    |G|^2_true ~ (K |G_b|^2 - |G_s|^2) / (K - 1)
    tr(Sigma)  ~ B_s K (|G_s|^2 - |G_b|^2) / (K - 1)        (per-sequence covariance)
    B_simple   = tr(Sigma) / |G|^2_true
Per rank we keep sum_k |h_k|^2 with h_k = g_k / K_local (loss scaled by 1/K_local); a sum over ranks at
flush time combines them. The element-wise maximum under DDP is the max over ranks of each rank's second
moment about the global mean, an upper bound of the exact value (exact with one process).

grad_var_sum = |G_s|^2 - |G_b|^2 comes from the squared norms, every step. grad_var_max needs the element-wise
moment sum_k h_k^2, a parameter-sized buffer that every micro-batch gradient streams through (about 4K + 3
passes over the gradients at K micro-batches, against K + 1 for everything else): `elementwise_at` says at
which steps it is kept; grad_var_max is NaN at the others.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _torch_compat as tc
from .base import MAX, RANK, SUM, Quantity, Schedule, Stat, every, group_max, group_sum


def noise_estimates(gs: np.ndarray, gb: np.ndarray, k: np.ndarray, b_s: np.ndarray) -> dict:
    """Pure McCandlish estimators; NaN where K < 2."""
    with np.errstate(invalid="ignore", divide="ignore"):
        km1 = np.where(k >= 2, k - 1.0, np.nan)
        true_sq = (k * gb - gs) / km1
        trace = b_s * k * (gs - gb) / km1
        return {"grad_true_sq": true_sq, "grad_trace_sigma": trace, "grad_noise_scale": trace / true_sq}


def _unscaled(ctx, cap) -> tuple[torch.Tensor, list | None]:
    """(sum_k |h_k|^2 per parameter, sum_k h_k^2 or None) in the units of `.grad` when it is read."""
    if cap.first_in_grad is not None:  # one pass in a single process: |h_1|^2 is |grad|^2, left to compute here
        return ctx.grad_sq(), None
    sq, m2 = cap.sq, cap.second_moment()
    scale = ctx.facts.grad_scale
    if scale is not None:  # passes captured from a GradScaler's scaled loss; .grad is unscaled by now
        inv_sq = scale.float().reciprocal().square()
        sq = sq * inv_sq
        if m2 is not None:
            tc.foreach_mul_(m2, inv_sq)
    return sq, m2


class GradVariance(Quantity):
    name = "grad_variance"
    writes = frozenset({"micro_sq_group", "rank_micro_sq", "var_max_group"})
    columns = frozenset(
        {
            "grad_true_sq",
            "grad_trace_sigma",
            "grad_noise_scale",
            "grad_sq_micro",
            "micro_batches",
            "grad_var_sum",
            "grad_var_max",
        }
    )
    requires = frozenset({"grad_sq_group"})  # |G|^2 per group, from GradNorm (and its grad_norm_user when given)
    reads_state = False  # the capture's moments; .grad only with one process (never under ZeRO)
    needs_micro_batches = True

    def __init__(self, schedule=None, elementwise: bool = True, elementwise_at: Schedule | None = None):
        super().__init__(schedule)
        self.needs_elementwise = elementwise
        self.elementwise_at = elementwise_at or every(1)
        """The steps at which grad_var_max is measured (the `paper` preset: every ELEMENTWISE_EVERY steps)."""

    def on_grads(self, ctx):
        cap = ctx.capture
        k_local = cap.micro_batches
        if k_local == 0:
            return {}
        sq, m2 = _unscaled(ctx, cap)
        out = {
            "micro_sq_group": Stat(group_sum(sq, ctx.group_index, ctx.n_groups), SUM),
            # this rank's mean |g_k|^2 = K_local * sum_k |h_k|^2
            "rank_micro_sq": Stat(sq.sum() * k_local, RANK),
        }
        if m2 is not None:
            # var_j = mean_k g_kj^2 - G_j^2 with g_k = K_local h_k, i.e. K_local * (sum_k h_kj^2 - G_j^2 / K_local),
            # formed in place in the capture's buffer (reset after the step anyway): one pass, no
            # parameter-sized temporary. Where there is no gradient, G = 0 and the moment is the variance.
            have = [i for i, p in enumerate(ctx.params) if p.grad is not None]
            grads = ctx.pre_clip_grads(have)
            tc.foreach_addcmul_([m2[i] for i in have], grads, grads, value=-1.0 / k_local)
            maxes = torch.stack(tc.foreach_max(m2)) * float(k_local)
            out["var_max_group"] = Stat(group_max(maxes, ctx.group_index, ctx.n_groups), MAX)
        return out

    def finalize(self, raw, meta, groups):
        if "micro_sq_group" not in raw or "grad_sq_group" not in raw:
            return {}, {}
        k_local = raw["_k_local"][:, 0]
        k_tot = k_local * meta.world_size
        s = raw["micro_sq_group"]  # (n_steps, n_groups): sum over ranks and micro-batches of |h_k|^2
        gs_group = (k_local**2 / k_tot)[:, None] * s
        gb_group = raw["grad_sq_group"]
        if "grad_norm_user" in raw:  # clipping happened outside the monitor: rescale to the pre-clip norm
            user = raw["grad_norm_user"][:, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.where(np.isnan(user), 1.0, user**2 / gb_group.sum(axis=1))
            gb_group = gb_group * scale[:, None]
        b_s = meta.batch_size / k_tot  # NaN where the batch size is unknown: tr(Sigma) is per sequence
        gs, gb = gs_group.sum(axis=1), gb_group.sum(axis=1)
        cols = noise_estimates(gs, gb, k_tot, b_s)
        cols["grad_sq_micro"] = gs
        cols["micro_batches"] = k_tot
        cols["grad_var_sum"] = np.where(k_tot >= 2, gs - gb, np.nan)
        var_max = raw.get("var_max_group")
        cols["grad_var_max"] = (
            np.where(k_tot >= 2, var_max.max(axis=1), np.nan) if var_max is not None else np.full(len(gs), np.nan)
        )
        per_group = {}
        for i, g in enumerate(groups):
            est = noise_estimates(gs_group[:, i], gb_group[:, i], k_tot, b_s)
            per_group[(g, "grad_trace_sigma")] = est["grad_trace_sigma"]
            per_group[(g, "grad_true_sq")] = est["grad_true_sq"]
        return cols, per_group
