"""Adam's second-moment state (the paper's gradient-variance measure), read after optimizer.step().

adam_v_max = max_j v_j, adam_v_l1 = sum_j v_j, min and mean, overall and per group; |exp_avg|.
Also bias-corrected: adam_vhat_max / adam_vhat_l1 of v / (1 - beta2^t), t the optimizer's own step count
of each parameter and beta2 its group's. The correction is one scalar per parameter tensor, so the scaled
max and sum of each tensor are exact without another pass over the state, even where t differs between the
parameters of a group (one left without a gradient at some step) or beta2 between optimizer groups.
Works for torch.optim.Adam/AdamW in their for-loop, foreach and fused forms (same state keys).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _torch_compat as tc
from .base import MAX, MIN, SAME, SUM, Quantity, Stat, group_max, group_min, group_sum


class AdamState(Quantity):
    name = "adam_state"
    writes = frozenset(
        {"vhat_max_group", "vhat_l1_group", "v_max_group", "v_l1_group", "v_min_group", "v_numel_group", "m_sq"}
    )
    columns = frozenset(
        {"adam_v_max", "adam_vhat_max", "adam_vhat_l1", "adam_v_l1", "adam_v_min", "adam_v_mean", "adam_m_norm"}
    )

    def on_after_step(self, ctx):
        state = ctx.optimizer.state
        have = [i for i, p in enumerate(ctx.params) if "exp_avg_sq" in state.get(p, {})]
        if not have:
            return {}
        vs = [ctx.local(state[ctx.params[i]]["exp_avg_sq"]) for i in have]  # this rank's shard under FSDP2
        ms = [ctx.local(state[ctx.params[i]]["exp_avg"]) for i in have]
        sub = ctx.subsets(have)
        vl1 = torch.stack(tc.sum_nonneg(vs)).float()  # v >= 0: the L1 norm is the sum
        # Min and max in one read of v (aminmax), one kernel per tensor: no multi-tensor min exists, and
        # _foreach_norm's -inf order is one kernel per tensor too on CUDA (it has multi-tensor kernels for
        # orders 1, 2, inf only) but 9x slower than amin on CPU. A multi-tensor max beside it would read v again.
        lo, hi = zip(*(torch.aminmax(v) if v.numel() else _cannot_win(v) for v in vs))
        vmin, vmax = torch.stack(lo).float(), torch.stack(hi).float()
        g, op = ctx.n_groups, ctx.shard_op
        c = bias_correction(ctx.optimizer, [ctx.params[i] for i in have]).to(vmax.device, vmax.dtype)
        return {
            "vhat_max_group": Stat(group_max(vmax * c, sub.groups, g), op(MAX)),
            "vhat_l1_group": Stat(group_sum(vl1 * c, sub.groups, g), op(SUM)),
            "v_max_group": Stat(group_max(vmax, sub.groups, g), op(MAX)),
            "v_l1_group": Stat(group_sum(vl1, sub.groups, g), op(SUM)),
            "v_min_group": Stat(group_min(vmin, sub.groups, g), op(MIN)),
            "v_numel_group": Stat(sub.group_numel, SAME),  # whole-parameter counts: the same on every rank
            "m_sq": Stat(torch.stack(tc.foreach_norm(ms)).float().square().sum(), op(SUM)),
        }

    def finalize(self, raw, meta, groups):
        if "v_max_group" not in raw:
            return {}, {}
        vmax, vl1, vmin, n = raw["v_max_group"], raw["v_l1_group"], raw["v_min_group"], raw["v_numel_group"]
        nan = np.full_like(vmax, np.nan)  # a state reader without step counts (ZeRO's partitions) says why in a note
        vhat_max, vhat_l1 = raw.get("vhat_max_group", nan), raw.get("vhat_l1_group", nan)
        cols = {
            "adam_v_max": vmax.max(axis=1),
            "adam_vhat_max": vhat_max.max(axis=1),
            "adam_vhat_l1": vhat_l1.sum(axis=1),
            "adam_v_l1": vl1.sum(axis=1),
            "adam_v_min": vmin.min(axis=1),
            "adam_v_mean": vl1.sum(axis=1) / n.sum(axis=1),
            "adam_m_norm": np.sqrt(raw["m_sq"][:, 0]),
        }
        per_group = {}
        for i, grp in enumerate(groups):
            per_group[(grp, "adam_v_max")] = vmax[:, i]
            per_group[(grp, "adam_v_l1")] = vl1[:, i]
            per_group[(grp, "adam_vhat_max")] = vhat_max[:, i]
            per_group[(grp, "adam_vhat_l1")] = vhat_l1[:, i]
        return cols, per_group


def _cannot_win(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) of an empty shard (a small parameter with fewer rows than ranks): values no min or max keeps."""
    return torch.full((), math.inf, device=v.device, dtype=v.dtype), torch.full(
        (), -math.inf, device=v.device, dtype=v.dtype
    )


def bias_correction(optimizer, params) -> torch.Tensor:
    """(len(params),) float64 1 / (1 - beta2^t) per parameter, on the device of the step counts; NaN for a
    parameter whose state has no step count or has taken no step (t < 1), or whose group has no betas."""
    beta2 = {id(p): g.get("betas", (math.nan, math.nan))[1] for g in optimizer.param_groups for p in g["params"]}
    counts = [torch.as_tensor(optimizer.state[p].get("step", math.nan)) for p in params]
    dev = counts[0].device  # CPU for torch's default AdamW; the parameters' device when fused or capturable
    if all(x.dim() == 0 and x.device == dev and x.dtype == counts[0].dtype for x in counts):
        t = torch.stack(counts).to(torch.float64)  # two kernels, not one copy per parameter
    else:
        t = torch.stack([x.reshape(()).to(dev, torch.float64) for x in counts])
    b2 = _betas(tuple(beta2.get(id(p), math.nan) for p in params), dev)
    return torch.where(t >= 1, 1.0 / (1.0 - b2**t), math.nan)


_BETAS: dict = {}


def _betas(values: tuple, dev) -> torch.Tensor:
    """The β2 of each parameter as a device tensor, made once per distinct set of values: a host-to-device copy
    every step would sync the hot path."""
    key = (values, str(dev))
    if key not in _BETAS:
        if len(_BETAS) > 64:  # schedules that change β2 every step: keep the cache bounded
            _BETAS.clear()
        _BETAS[key] = torch.tensor(values, dtype=torch.float64, device=dev)
    return _BETAS[key]
