"""Adam's second-moment state (the paper's gradient-variance measure), read after optimizer.step().

adam_v_max = max_j v_j, adam_v_l1 = sum_j v_j, min and mean, overall and per group; |exp_avg|.
Works for torch.optim.Adam/AdamW in their for-loop, foreach and fused forms (same state keys).
"""
from __future__ import annotations

import numpy as np
import torch

from .base import SAME, Quantity, Stat, group_max, group_min, group_sum


class AdamState(Quantity):
    name = "adam_state"

    def __init__(self, schedule=None):
        super().__init__(schedule)
        self._layout: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _group_layout(self, ctx, have: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(group of each state tensor, element count per group), made once per set of parameters with
        state: tensors built from host data are host-to-device copies, which synchronise on CUDA."""
        key = tuple(have)
        if key not in self._layout:
            gidx = ctx.group_index.cpu()[have]
            numel = group_sum(torch.tensor([float(ctx.params[i].numel()) for i in have]), gidx, ctx.n_groups)
            dev = ctx.group_index.device
            self._layout[key] = (gidx.to(dev), numel.to(dev))
        return self._layout[key]

    def on_after_step(self, ctx):
        state = ctx.optimizer.state
        have = [i for i, p in enumerate(ctx.params) if "exp_avg_sq" in state.get(p, {})]
        if not have:
            return {}
        vs = [state[ctx.params[i]]["exp_avg_sq"] for i in have]
        ms = [state[ctx.params[i]]["exp_avg"] for i in have]
        idx, numel = self._group_layout(ctx, have)
        vmax = torch.stack(torch._foreach_max(vs)).float()
        vl1 = torch.stack(torch._foreach_norm(vs, 1)).float()  # v >= 0: the L1 norm is the sum
        # No multi-tensor min exists, and _foreach_norm's -inf order is one kernel per tensor too on CUDA
        # (it has multi-tensor kernels for orders 1, 2, inf only) but 9x slower than amin on CPU.
        vmin = torch.stack([v.amin() for v in vs]).float()
        g = ctx.n_groups
        return {
            "v_max_group": Stat(group_max(vmax, idx, g), SAME),
            "v_l1_group": Stat(group_sum(vl1, idx, g), SAME),
            "v_min_group": Stat(group_min(vmin, idx, g), SAME),
            "v_numel_group": Stat(numel, SAME),
            "m_sq": Stat(torch.stack(torch._foreach_norm(ms)).float().square().sum(), SAME),
        }

    def finalize(self, raw, meta, groups):
        if "v_max_group" not in raw:
            return {}, {}
        vmax, vl1, vmin, n = raw["v_max_group"], raw["v_l1_group"], raw["v_min_group"], raw["v_numel_group"]
        cols = {
            "adam_v_max": vmax.max(axis=1),
            "adam_v_l1": vl1.sum(axis=1),
            "adam_v_min": vmin.min(axis=1),
            "adam_v_mean": vl1.sum(axis=1) / n.sum(axis=1),
            "adam_m_norm": np.sqrt(raw["m_sq"][:, 0]),
        }
        per_group = {}
        for i, grp in enumerate(groups):
            per_group[(grp, "adam_v_max")] = vmax[:, i]
            per_group[(grp, "adam_v_l1")] = vl1[:, i]
        return cols, per_group
