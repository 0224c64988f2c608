"""One optimizer step as the monitor sees it, from its first forward to `Monitor.step`.

A `MonitorStep` is made fresh for each step and holds everything the monitor keeps about it: what the forwards
showed, the facts the quantities read (gradvar.quantities.base.StepFacts), the gradient statistics read before
clipping, the statistics of the row being built, the clip coefficient, whether an optimizer step ran, and the
`Monitor.step` calls held until one did. Its fields change only through its methods, named after the moment of
the step that calls them: the loop's hooks (gradvar.loop_hooks) as the step goes, Monitor.step at its end.
"""

from __future__ import annotations

import torch

from . import sharded
from .inputs import MicroBatch, StepInputs
from .pre_clip import PreClip
from .quantities.base import Stat, StepFacts


class MonitorStep:
    def __init__(self, number: int):
        self.number = number
        """The step under way, from 1: the `step` of the row it closes into."""
        self.inputs = StepInputs()
        self.facts = StepFacts()
        self.stats: dict[str, Stat] = {}
        """The row's statistics: the gradient read's (at the close), the update's, Monitor.step's."""
        self.side_rows: list[tuple[str, dict]] = []
        """(table, row) rows the quantities made at this step (the sequence-length probe's)."""
        self.grads_read = False
        """The gradient was read (or found gone) this step: later backward passes make the read stale."""
        self.stale_read = False
        self.clip_coef: torch.Tensor | None = None
        self.clip_base_sq: torch.Tensor | None = None
        self.took_step = False
        """The optimizer's step pre-hook ran."""
        self.held: list[tuple] = []
        """(loss, options) of the Monitor.step calls that took no step, counted in this step's row."""
        self._grad_stats: dict[str, Stat] = {}

    def renumber(self, number: int) -> None:
        """The run's step count changed under the step (a checkpoint loaded)."""
        self.number = number

    # ------------------------------------------------------------- the loop's hooks
    def saw_forward(self, mb: MicroBatch | None) -> None:
        self.inputs.add(mb)

    def saw_loss(self, loss: torch.Tensor) -> None:
        self.inputs.add_loss(loss)

    def read(self, k_local: int, pre_clip: PreClip, grad_scale: torch.Tensor | None) -> None:
        """The gradient before clipping was read, after `k_local` backward passes."""
        self.grads_read = True
        self.facts.read(k_local, pre_clip, grad_scale)

    def gradient_gone(self, k_local: int) -> None:
        """`.grad` was set to None before any read (zero_grad after a GradScaler's skip): nothing to read."""
        self.grads_read = True
        self.facts.read(k_local)

    def add_grad_stats(self, stats: dict) -> None:
        """Statistics of the gradient read, kept for the row unless a later backward pass makes them stale."""
        self._grad_stats.update(stats)

    def pass_ended(self) -> None:
        if self.grads_read:  # the gradient statistics were taken before this pass reached .grad
            self.stale_read = True

    def stepping(self, lr: float, snapshot: list[torch.Tensor] | None) -> None:
        """The optimizer is about to update the parameters with learning rate `lr`."""
        self.took_step = True
        self.facts.stepping(lr, snapshot)

    def updated(self) -> None:
        self.facts.updated()

    def clipped(self, coef: torch.Tensor, base_sq: torch.Tensor | None = None) -> None:
        """Monitor.clip_grad_norm_ multiplied the gradient by `coef`: the gradient read, when nothing else changed
        it since (a second clip multiplies the coefficients), else the one whose |grad|^2 per parameter is
        `base_sq`, as the loop left it."""
        if base_sq is not None:
            self.clip_coef, self.clip_base_sq = coef, base_sq
        else:
            self.clip_coef = coef if self.clip_coef is None else self.clip_coef * coef
        self.facts.clipped(self.clip_coef, self.clip_base_sq)

    def add_stats(self, stats: dict) -> None:
        self.stats.update(stats)

    # ------------------------------------------------------------- Monitor.step
    def hold(self, loss, options: dict) -> None:
        """A Monitor.step call after an optimizer.step() that took no step: its loss and options count in the
        row of the step that follows (the graph of a held loss is not kept)."""
        self.held.append((_detached(loss), options))

    def with_held(self, loss, options: dict) -> tuple:
        """The step's loss and options with those of the held calls: the losses of every call (the forwards'
        when a call gave none), the latest value of each option."""
        calls = [*self.held, (loss, options)]
        if len(calls) == 1:
            return loss, options
        losses = [x for call_loss, _ in calls for x in _as_list(call_loss)]
        merged = {k: next((kw[k] for _, kw in reversed(calls) if kw[k] is not None), None) for k in options}
        return (None if any(x is None for x in losses) else losses), merged

    def close(self, loss, grad_norm) -> None:
        """Monitor.step closes the step: the gradient read's statistics join the row (unless stale), and the
        losses and the loop's pre-clip norm become facts."""
        if not self.stale_read:
            self.stats.update(self._grad_stats)
        self.facts.closed(
            self._losses(loss),
            loss is not None,
            torch.stack(self.inputs.losses) if self.inputs.losses else None,
            None if grad_norm is None else torch.as_tensor(sharded.replicated(grad_norm)).detach().float(),
        )

    def _losses(self, loss):
        if loss is None:
            got = self.inputs.losses
            return torch.stack(got) if got else None
        if isinstance(loss, (list, tuple)):
            return torch.stack([torch.as_tensor(x).detach().float().reshape(()) for x in loss])
        return torch.as_tensor(loss).detach().float().reshape(1)


def _as_list(loss) -> list:
    return list(loss) if isinstance(loss, (list, tuple)) else [loss]


def _detached(loss):
    if isinstance(loss, (list, tuple)):
        return [_detached(x) for x in loss]
    return loss.detach() if isinstance(loss, torch.Tensor) else loss
