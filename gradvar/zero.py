"""DeepSpeed ZeRO (stages 1, 2 and 3): the monitor's view of flat per-rank optimizer partitions.

Under ZeRO the optimizer does not see the model's parameters. DeepSpeed flattens each parameter group and
gives every rank one contiguous fp32 partition of it (stage 1/2: `single_partition_of_fp32_groups`; stage 3:
`fp32_partitioned_groups_flat`, one per sub-group), and the wrapped torch optimizer keeps its state
(`exp_avg_sq`, `exp_avg`) over those flat tensors. Each partition holds slices of some parameters:
stage 1/2 say where in `param._hp_mapping` (the map DeepSpeed's own checkpoints use); under stage 3 a
parameter's partition `ds_tensor` is a fixed-size slice of the flat tensor whose tail on the last ranks is
padding. `Segments` turn that into (parameter, start, length) per partition, padding left out.

DeepSpeed calls the torch optimizer's `step()` once per partition inside its own step, with `param_groups`
narrowed to that partition, after reducing the gradient into `partition.grad` and clipping it. `ZeroSteps`
hooks those calls: before each it reads the partition's gradient, after each its state and update; every
statistic is a shard-local reduction per parameter group that the flush combines across ranks. Nothing is
gathered. To the monitor, `ZeroSteps` is an optimizer whose step hooks run once per DeepSpeed step.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.distributed as dist
from torch.utils.hooks import RemovableHandle

from . import _torch_compat as tc
from .quantities.base import group_max, group_min, group_sum
from .quantities.grad_norm import nonfinite_now


class Segments:
    """The slices of monitored parameters in one flat partition, as views of any tensor of its shape."""

    def __init__(self, flat: torch.Tensor, segs: list[tuple[int, int, int]], group_of: list[int]):
        self.flat, self.starts, self.numels = flat, [s for _, s, _ in segs], [n for _, _, n in segs]
        self.groups = torch.tensor([group_of[i] for i, _, _ in segs], dtype=torch.long, device=flat.device)
        self.numel = torch.tensor([float(n) for n in self.numels], device=flat.device)

    def views(self, t: torch.Tensor) -> list[torch.Tensor]:
        flat = t.reshape(-1)
        return [flat.narrow(0, s, n) for s, n in zip(self.starts, self.numels)]


def stage12_segments(zopt, index_of: dict[int, int]) -> list[tuple[torch.Tensor, list]]:
    """(flat partition, [(param index, start, numel)]) per group: where `_hp_mapping` puts each parameter."""
    out = []
    for lp_group, flat in zip(zopt.bit16_groups, zopt.single_partition_of_fp32_groups):
        segs = []
        for p in lp_group:
            m = getattr(p, "_hp_mapping", None)  # None: no element of p in this rank's partition
            if m is not None and m.hp_fragment_address.numel > 0 and id(p) in index_of:
                segs.append((index_of[id(p)], m.hp_fragment_address.start, m.hp_fragment_address.numel))
        out.append((flat, segs))
    return out


def stage3_segments(zopt, index_of: dict[int, int]) -> list[tuple[torch.Tensor, list]]:
    """(flat partition, [(param index, start, numel)]) per sub-group. A parameter of n elements is padded to a
    multiple of the ranks and cut into equal `ds_tensor` slices, laid end to end in the flat partition: rank
    r's slice holds elements [r·size, (r+1)·size) of it, the part past n is padding."""
    out = []
    for sub, flat in zip(zopt.fp16_groups, zopt.fp32_partitioned_groups_flat):
        segs, offset = [], 0
        for p in sub:
            size = int(p.ds_tensor.ds_numel)
            valid = min(size, max(0, int(p.ds_numel) - dist.get_rank(group=p.ds_process_group) * size))
            if valid and id(p) in index_of:
                segs.append((index_of[id(p)], offset, valid))
            offset += size
        if offset != flat.numel():
            raise RuntimeError(
                f"gradvar: a ZeRO-3 partition holds {flat.numel()} elements, its parameters' slices {offset}: "
                "this DeepSpeed lays out partitions in a way gradvar does not know"
            )
        out.append((flat, segs))
    return out


class ZeroSteps:
    """The torch optimizer's per-partition step calls inside one DeepSpeed step, seen as one optimizer step
    (what the monitor hooks), with the step's partition statistics, per parameter group, on the device."""

    def __init__(self, zopt, stage: int):
        self.zopt, self.stage, self.base = zopt, stage, zopt.optimizer
        self.parts: dict[int, Segments] = {}
        self.n_groups, self.n_calls, self.want_update = 0, 0, False
        self._pre: OrderedDict = OrderedDict()
        self._post: OrderedDict = OrderedDict()
        self._calls = 0
        self.has_state = False
        """Whether this step's partitions had Adam state (a host fact: no device read)."""
        self.stats: dict[str, torch.Tensor] = {}
        self._snap: dict[int, torch.Tensor] = {}
        self._handles = [
            self.base.register_step_pre_hook(self._before),
            self.base.register_step_post_hook(self._after),
        ]

    def bind(self, params: list[torch.Tensor], group_of: list[int], n_groups: int, want_update: bool) -> None:
        """Map the partitions to the monitor's parameters (its order, its groups)."""
        index_of = {id(p): i for i, p in enumerate(params)}
        layout = stage3_segments if self.stage == 3 else stage12_segments
        flats = layout(self.zopt, index_of)
        self.device = flats[0][0].device
        self.parts = {id(flat): Segments(flat, segs, group_of) for flat, segs in flats if segs}
        self.n_calls = len(self.zopt.fp16_groups if self.stage == 3 else self.zopt.bit16_groups)
        self.n_groups, self.want_update = n_groups, want_update

    # the torch.optim.Optimizer surface the monitor uses
    @property
    def param_groups(self):
        return self.base.param_groups

    @property
    def state(self):
        return self.base.state

    def register_step_pre_hook(self, fn) -> RemovableHandle:
        h = RemovableHandle(self._pre)
        self._pre[h.id] = fn
        return h

    def register_step_post_hook(self, fn) -> RemovableHandle:
        h = RemovableHandle(self._post)
        self._post[h.id] = fn
        return h

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    # ------------------------------------------------------------- per partition
    def _current(self) -> list[Segments]:
        """The partitions DeepSpeed hands the torch optimizer in this call."""
        return [self.parts[id(p)] for g in self.base.param_groups for p in g["params"] if id(p) in self.parts]

    def _reset(self) -> None:
        dev, g = self.device, self.n_groups
        zeros = lambda: torch.zeros(g, device=dev)  # noqa: E731
        self.stats = {
            "grad_sq": zeros(),
            "bad": torch.zeros((), device=dev),
            "v_max": torch.full((g,), -math.inf, device=dev),
            "v_l1": zeros(),
            "v_min": torch.full((g,), math.inf, device=dev),
            "v_numel": zeros(),
            "m_sq": torch.zeros((), device=dev),
            "update_sq": zeros(),
            "param_sq": zeros(),
        }
        self.stats["clip_coef"] = self._clip_coef(dev)

    def _clip_coef(self, dev) -> torch.Tensor:
        """What DeepSpeed divided the partitions' gradients by before this step (unscale_and_clip_grads): its
        clip factor of the global norm it computed over every partition (the loss scale is 1: fp16 refused)."""
        z, norm = self.zopt, self.zopt._global_grad_norm
        if not z.clip_grad > 0 or norm is None:
            return torch.ones((), device=dev)
        norm = torch.as_tensor(norm, device=dev).float()
        return ((norm / z.loss_scale + 1e-6) / z.clip_grad).clamp(min=1.0)

    def _before(self, optimizer, args, kwargs) -> None:
        if self._calls == 0:  # the DeepSpeed step's first partition
            self._reset()
            self.has_state = False
            for fn in list(self._pre.values()):
                fn(self, args, kwargs)
        s = self.stats
        for part in self._current():
            if part.flat.grad is not None:
                gs = part.views(part.flat.grad)
                sq = torch.stack(tc.foreach_norm(gs)).float().square()
                s["grad_sq"].index_add_(0, part.groups, sq)
                s["bad"] += nonfinite_now(gs, sq).sum()  # the CPU reads only the views whose norm is not finite
            if self.want_update:
                self._snap[id(part.flat)] = part.flat.detach().clone()

    def _after(self, optimizer, args, kwargs) -> None:
        for part in self._current():
            self._read_state(part)
        self._calls += 1
        if self._calls == self.n_calls:  # its last: DeepSpeed copies the partitions back to the model next
            self._calls = 0
            self._snap = {}
            for fn in list(self._post.values()):
                fn(self, args, kwargs)

    def _read_state(self, part: Segments) -> None:
        s, g = self.stats, self.n_groups
        state = self.base.state.get(part.flat, {})
        if "exp_avg_sq" in state:
            self.has_state = True
            vs, ms = part.views(state["exp_avg_sq"]), part.views(state["exp_avg"])
            s["v_max"] = torch.maximum(s["v_max"], group_max(torch.stack(tc.foreach_max(vs)).float(), part.groups, g))
            s["v_l1"] += group_sum(torch.stack(tc.sum_nonneg(vs)).float(), part.groups, g)
            s["v_min"] = torch.minimum(
                s["v_min"], group_min(torch.stack([v.amin() for v in vs]).float(), part.groups, g)
            )
            s["v_numel"] += group_sum(part.numel, part.groups, g)
            s["m_sq"] += torch.stack(tc.foreach_norm(ms)).float().square().sum()
        before = self._snap.get(id(part.flat))
        if before is not None:
            now = part.views(part.flat.detach())
            delta = tc.foreach_sub(now, part.views(before))
            s["update_sq"] += group_sum(torch.stack(tc.foreach_norm(delta)).float().square(), part.groups, g)
            s["param_sq"] += group_sum(torch.stack(tc.foreach_norm(now)).float().square(), part.groups, g)
