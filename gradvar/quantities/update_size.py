"""Relative update size rms(delta theta) / rms(theta), overall and per group.

Needs the parameters from before the step: the monitor snapshots them in the optimizer's pre-step hook
(one copy of the parameters, only on scheduled steps).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _torch_compat as tc
from .base import SUM, Quantity, Stat, group_sum


class UpdateSize(Quantity):
    name = "update_size"
    writes = frozenset({"update_sq_group", "param_sq_group"})
    columns = frozenset({"update_rms"})
    needs_snapshot = True

    def on_after_step(self, ctx):
        before = ctx.facts.snapshot
        if before is None:
            return {}
        params = [ctx.local(p.detach()) for p in ctx.params]  # shards under FSDP2, as is the snapshot
        delta = tc.foreach_sub(params, before)
        d_sq = torch.stack(tc.foreach_norm(delta)).float().square()
        p_sq = torch.stack(tc.foreach_norm(params)).float().square()
        return {
            "update_sq_group": Stat(group_sum(d_sq, ctx.group_index, ctx.n_groups), ctx.shard_op(SUM)),
            "param_sq_group": Stat(group_sum(p_sq, ctx.group_index, ctx.n_groups), ctx.shard_op(SUM)),
        }

    def finalize(self, raw, meta, groups):
        if "update_sq_group" not in raw:
            return {}, {}
        d, p = raw["update_sq_group"], raw["param_sq_group"]
        with np.errstate(invalid="ignore", divide="ignore"):
            cols = {"update_rms": np.sqrt(d.sum(axis=1) / p.sum(axis=1))}
            per_group = {(g, "update_rms"): np.sqrt(d[:, i] / p[:, i]) for i, g in enumerate(groups)}
        return cols, per_group
