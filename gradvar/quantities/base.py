"""Base pieces of every quantity: a typed context, a schedule, and how each value combines across ranks.

A quantity returns device tensors wrapped in `Stat(value, op)`; the monitor buffers them, combines them
across ranks at flush time (one collective for all buffered steps together, gradvar.combine), copies them to
the host once, and calls `finalize` to turn the combined raw values into table columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import _torch_compat as tc
from ..pre_clip import PreClip
from ..sharded import local

SUM, MAX, MIN, SAME, RANK = "sum", "max", "min", "same", "rank"
"""SUM/MAX/MIN: all-reduced; SAME: identical on every rank (rank 0's is used); RANK: one slot per rank."""

Schedule = Callable[[int], bool]


@dataclass(frozen=True)
class Stat:
    value: torch.Tensor
    op: str = SAME


def every(n: int = 1, start: int = 1) -> Schedule:
    """Run at steps start, start+n, ..."""
    return lambda step: step >= start and (step - start) % n == 0


def dense_then_every(n: int, dense_until: int = 30) -> Schedule:
    """Every step up to `dense_until` (spikes come early), then every n."""
    return lambda step: step <= dense_until or step % n == 0


def at_steps(steps) -> Schedule:
    chosen = {int(s) for s in steps}
    return lambda step: step in chosen


def any_of(*schedules: Schedule) -> Schedule:
    """Run where any of the schedules runs."""
    return lambda step: any(s(step) for s in schedules)


@dataclass
class StepFacts:
    """What the monitor learns about the step under way, for the quantities (`StepContext.facts`): each field
    typed once here, None (0, False) until the moment of the step that sets it. Set only by its own methods,
    one per moment, which the step's owner (gradvar.step.MonitorStep) calls."""

    k_local: int = 0
    """Backward passes this rank ran this step (micro-batches); set at the gradient read."""
    pre_clip: PreClip | None = None
    """The step's gradient before clipping and unscaling (gradvar.pre_clip): read once, shared."""
    grad_scale: torch.Tensor | None = None
    """A GradScaler's scale of this step's backward passes (the captured moments are S times the true ones)."""
    lr_applied: float | None = None
    """The LR of the update, read in the optimizer's pre-step hook."""
    snapshot: list[torch.Tensor] | None = None
    """The parameters (this rank's shards) before the update, on steps where a quantity needs them; released
    once the update's quantities ran."""
    clip_coef: torch.Tensor | None = None
    """What Monitor.clip_grad_norm_ multiplied the gradient by."""
    clip_base_sq: torch.Tensor | None = None
    """(n_params,) |grad|^2 per parameter of the gradient `clip_coef` multiplied, where the loop changed `.grad`
    between the read and Monitor.clip_grad_norm_; None: the read's `pre_clip.grad_sq`, nothing else changed it."""
    grad_norm_user: torch.Tensor | None = None
    """The pre-clip norm the loop passed to Monitor.step (the statistics are rescaled to it)."""
    losses: torch.Tensor | None = None
    """The step's micro-batch losses as given, or as the forwards returned them; None when neither."""
    loss_given: bool = False
    """Whether Monitor.step was passed a loss."""
    forward_losses: torch.Tensor | None = None
    """The losses the model's forwards returned this step."""

    def read(self, k_local: int, pre_clip: PreClip | None = None, grad_scale: torch.Tensor | None = None) -> None:
        """The gradient read (pre_clip None: the gradient was gone, only the passes are known)."""
        self.k_local, self.pre_clip, self.grad_scale = k_local, pre_clip, grad_scale

    def stepping(self, lr: float, snapshot: list[torch.Tensor] | None) -> None:
        """The optimizer is about to update the parameters."""
        self.lr_applied, self.snapshot = lr, snapshot

    def updated(self) -> None:
        """The update's quantities ran: the snapshot is not needed any more."""
        self.snapshot = None

    def clipped(self, coef: torch.Tensor, base_sq: torch.Tensor | None = None) -> None:
        """Monitor.clip_grad_norm_ multiplied by `coef` the gradient read, or the one whose |grad|^2 per parameter
        is `base_sq` (the loop changed it after the read)."""
        self.clip_coef, self.clip_base_sq = coef, base_sq

    def closed(self, losses, loss_given: bool, forward_losses, grad_norm_user) -> None:
        """Monitor.step closes the step."""
        self.losses, self.loss_given, self.forward_losses = losses, loss_given, forward_losses
        self.grad_norm_user = grad_norm_user


@dataclass(frozen=True)
class StepContext:
    """What a quantity may look at. Built by the monitor; quantities never keep references to it."""

    step: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: tuple
    group_index: torch.Tensor
    """(n_params,) long: the group of each parameter."""
    n_groups: int
    capture: object
    """The GradCapture holding this step's micro-batch moments."""
    subsets: Callable
    """gradvar.groups.Subsets: device index, groups and sizes of a subset of `params`, made once per subset."""
    world_size: int = 1
    facts: StepFacts = field(default_factory=StepFacts)
    """What the monitor learnt about the step so far (the read, the clip, the update, the losses): live, the
    same object at every event of the step."""
    sharded: bool = False
    """FSDP2: params, gradients and optimizer state are DTensor shards; read them through `local`, and
    combine what is computed from them with `shard_op`."""
    rank: int = 0
    side_rows: list = field(default_factory=list)
    """(table, row) rows for other tables, flushed with the steps: add them with `add_rows`."""

    def add_rows(self, table: str, rows) -> None:
        """Rows of another table (the sequence-length probe's `probes`), written with the step's flush (rank 0's
        rows; their device scalars come to the host in the flush's one copy)."""
        self.side_rows.extend((table, r) for r in rows)

    def local(self, t):
        """This rank's shard of a DTensor, else the tensor itself."""
        return local(t)

    def shard_op(self, op: str) -> str:
        """How a statistic of the parameters/gradients/optimizer state combines across ranks: SAME when every
        rank holds all of it (one process, DDP), `op` (SUM, MAX or MIN) over the shards under FSDP2."""
        return op if self.sharded else SAME

    def grads(self) -> list[torch.Tensor]:
        """`.grad` of every parameter (this rank's shard under FSDP2), a 1-element zero where there is none
        (foreach lists stay aligned)."""
        return [local(p.grad) if p.grad is not None else torch.zeros(1, device=p.device) for p in self.params]

    def grad_sq(self) -> torch.Tensor:
        """(n_params,) float32 |G|^2 per parameter: the step's gradient as its last backward pass left it,
        before clipping, loss scale divided out (gradvar.pre_clip). Read once per step and shared."""
        return self._pre_clip().grad_sq

    def applied_sq(self) -> torch.Tensor | None:
        """(n_params,) |grad|^2 as the optimizer is handed it (after clipping); None when equal to grad_sq."""
        return self._pre_clip().applied_sq

    def pre_clip_grads(self, have: list[int]) -> list[torch.Tensor]:
        """float32 G of the parameters `have` (which all have a `.grad`), before clipping and unscaled."""
        gs = [local(self.params[i].grad).float() for i in have]
        f = self._pre_clip().factor
        if f is None:
            return gs
        return tc.foreach_mul(gs, f if f.dim() == 0 else list(f[have].unbind()))

    def _pre_clip(self) -> PreClip:
        if self.facts.pre_clip is None:
            raise RuntimeError(
                "gradvar: the step's gradient is read from on_grads on; a quantity asked for it before the read "
                "(or after a step whose gradient was gone)"
            )
        return self.facts.pre_clip


@dataclass(frozen=True)
class FlushMeta:
    """Host-side facts the finalizers need for each buffered step."""

    world_size: int
    batch_size: np.ndarray
    """(n_steps,) sequences per optimizer step, all ranks (NaN where unknown)."""


def group_sum(values: torch.Tensor, index: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(n_params,) -> (n_groups,) sums."""
    return torch.zeros(n_groups, device=values.device, dtype=values.dtype).index_add_(0, index, values)


def group_max(values: torch.Tensor, index: torch.Tensor, n_groups: int) -> torch.Tensor:
    out = torch.full((n_groups,), -math.inf, device=values.device, dtype=values.dtype)
    return out.scatter_reduce_(0, index, values, reduce="amax")


def group_min(values: torch.Tensor, index: torch.Tensor, n_groups: int) -> torch.Tensor:
    out = torch.full((n_groups,), math.inf, device=values.device, dtype=values.dtype)
    return out.scatter_reduce_(0, index, values, reduce="amin")


class Quantity:
    """One measured quantity. Override only the events you need; each returns {name: Stat}.

    A quantity declares what it writes and what it requires, and the monitor checks them when it is built
    (gradvar.quantities.complete): one writer per name, a missing writer added, a quantity that cannot run on a
    rank's shard kept out of FSDP2 and ZeRO runs with a note.
    """

    name = "quantity"
    writes: frozenset[str] = frozenset()
    """The raw statistics its events return: combined across ranks at flush, handed to every finalize."""
    columns: frozenset[str] = frozenset()
    """The steps columns and the layers stats its finalize writes."""
    requires: frozenset[str] = frozenset()
    """Raw statistics of other quantities its finalize reads: the monitor adds their writer when none is given."""
    needs_full_params: bool = False
    """True: needs whole parameters or gradients, which no rank holds under FSDP2 or DeepSpeed ZeRO: it does not
    run there, and a note says so."""
    reads_state: bool = True
    """True: reads the parameters, `.grad` or the optimizer state through the context. DeepSpeed ZeRO keeps those
    in its own flat partitions, so such a quantity needs a ZeRO form (gradvar.integrations.deepspeed) and is
    refused there without one. False: it reads only the capture, the losses or the model's forwards."""
    needs_elementwise = False
    needs_snapshot = False
    needs_micro_batches = False
    """True: on_grads reads the capture's per-pass moments (skipped when `.grad` stopped summing them)."""

    def __init__(self, schedule: Schedule | None = None):
        self.schedule = schedule or every(1)

    def on_grads(self, ctx: StepContext) -> dict:
        """`.grad` holds the step's (all-reduced) gradient, before clipping."""
        return {}

    def on_after_step(self, ctx: StepContext) -> dict:
        """The optimizer has stepped: its state and the parameters are updated."""
        return {}

    def on_step(self, ctx: StepContext) -> dict:
        """`Monitor.step` was called: the micro-batch losses are in ctx.facts."""
        return {}

    def finalize(self, raw: dict, meta: FlushMeta, groups: list[str]) -> tuple[dict, dict]:
        """(steps columns, {(group, stat): column}) from the combined raw values, as (n_steps,) arrays."""
        return {}, {}

    def notes(self, raw: dict) -> list[tuple[str, str]]:
        """(reason, message) for each thing the combined raw values show the user should know."""
        return []
