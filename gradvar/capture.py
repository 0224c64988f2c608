"""Per-micro-batch gradient capture, on the device, with no host-device sync.

A gradient pre-hook on every trainable parameter sees that parameter's gradient of one backward pass
*before* it is accumulated into `.grad` and, under DDP, before the all-reduce: h_k, the local micro-batch
contribution. With the usual loss scaling by 1/K (gradient accumulation), the micro-batch gradient is
g_k = K_local * h_k. Per parameter we keep sum_k |h_k|^2 and, optionally, sum_k h_k^2 element-wise: all that
the McCandlish estimators and the element-wise variance need. The statistics are multi-tensor (foreach)
kernels run once per pass, when its backward ends (an autograd end-of-task callback), a handful of launches
whatever the number of parameters. A pass is one backward call, nested backwards included (see `_join`).

In a single process the step's first pass costs nothing. Its hooks only note which parameters got a
gradient: they hold no reference to it, so autograd can move the gradient into `.grad` instead of copying it
(any live reference forces a copy). After that pass `.grad` *is* h_1 (the loop zeroes gradients between
steps), so h_1 is read from `.grad` when a second pass starts, before that pass accumulates anything. A
step of one micro-batch (the variance across micro-batches is undefined then) does no work here at all:
|h_1|^2 is the gradient norm the monitor computes anyway (`StepContext.grad_sq`). Under DDP `.grad` holds
the all-reduced gradient, not h_k, so every pass is held and accumulated.
"""
from __future__ import annotations

import functools
import threading

import torch

from .groups import Subsets


class GradCapture:
    """Accumulates micro-batch gradient moments between optimizer steps."""

    def __init__(self, params: list[torch.Tensor], subsets: Subsets, elementwise: bool = False, lazy: bool = True):
        self.params, self._subsets = params, subsets
        self.elementwise, self.lazy = elementwise, lazy
        self.sq = torch.zeros(len(params), device=params[0].device, dtype=torch.float32)
        """(n_params,): sum over this step's taken passes of |h_k|^2 per parameter (see `first_in_grad`)."""
        self._m2: list[torch.Tensor] | None = None
        self.micro_batches = 0  # a Python int: counting backward passes needs no device value
        self.first_in_grad: list[int] | None = None
        """Lazy mode: the parameters whose `.grad` still holds the first pass, not yet taken into `sq`."""
        self._pass: dict | None = None
        self._node = None  # the first parameter's gradient accumulator (see _accumulates)
        self._lock = threading.Lock()  # autograd may run hooks of devices on their own threads
        self._handles: list | None = None
        self.active = True

    @property
    def active(self) -> bool:
        return self._handles is not None

    @active.setter
    def active(self, on: bool) -> None:
        # Unhook while paused, not just ignore: the probes' torch.autograd.grad must not count as a pass, and
        # a paused monitor should cost nothing.
        if on and self._handles is None:
            self._node = self._node or _grad_accumulator(self.params[0])
            self._handles = [p.register_hook(functools.partial(self._on_grad, i)) for i, p in enumerate(self.params)]
        elif not on and self._handles is not None:
            for h in self._handles:
                h.remove()
            self._handles = None

    def _on_grad(self, i: int, grad: torch.Tensor) -> None:
        task = torch._C._current_graph_task_id()
        with self._lock:
            ps = self._pass
            if ps is None or task not in ps["tasks"]:
                if not _accumulates(self._node):  # torch.autograd.grad: not a micro-batch
                    return
                ps = self._join(task)
            # The first pass is not held: a reference would make autograd copy it into .grad. Later passes
            # hold the gradient itself (not an alias): autograd then never moves it into a .grad that DDP
            # overwrites with the all-reduced gradient at the end of the backward.
            held = None if ps["first"] else grad
            if held is not None and ps["grads"].get(i) is not None:  # reached twice in one pass: h_k is the sum
                held = ps["grads"][i] + held
            ps["grads"][i] = held

    def _join(self, task: int) -> dict:
        """The pass a backward task's gradients belong to. A task that starts while the pass has one running
        is nested in it (reentrant activation checkpointing runs a backward inside the backward); a task
        older than the pass's newest one was running all along (the pass began inside a nested task)."""
        ps = self._pass
        if ps is None or not (ps["open"] or task < max(ps["tasks"])):
            self._take_first()  # nothing of this backward is in .grad yet
            ps = self._pass = {"tasks": set(), "open": set(), "grads": {}, "counted": False,
                               "first": self.lazy and self.micro_batches == 0}
        ps["tasks"].add(task)
        ps["open"].add(task)
        # runs once the task's every gradient is accumulated
        torch.autograd.Variable._execution_engine.queue_callback(functools.partial(self._task_done, ps, task))
        return ps

    def _task_done(self, ps: dict, task: int) -> None:
        with self._lock:
            ps["open"].discard(task)
            if not ps["open"]:
                self._end_pass(ps)

    def _end_pass(self, ps: dict) -> None:
        have = sorted(ps["grads"])  # parameter order, for stable layouts
        if ps["first"]:
            self.first_in_grad = sorted(set(self.first_in_grad or ()) | set(have))
        else:
            self._accumulate(have, [ps["grads"][i] for i in have])
        ps["grads"] = {}
        if not ps["counted"]:  # a pass that resumes (see _join) is still the same micro-batch
            ps["counted"] = True
            self.micro_batches += 1

    def _take_first(self) -> None:
        """Move the first pass, still alone in `.grad`, into the moments (lazy mode, K >= 2)."""
        if self.first_in_grad is not None:
            have, self.first_in_grad = self.first_in_grad, None
            self._accumulate(have, [self.params[i].grad for i in have])

    def _accumulate(self, have: list[int], gs: list[torch.Tensor]) -> None:
        gs = [g if g.dtype == torch.float32 else g.float() for g in gs]
        self.sq.index_add_(0, self._subsets(have).index, torch.stack(torch._foreach_norm(gs)).square())
        if not self.elementwise:
            return
        if self._m2 is None:  # the step's first contribution: write h^2, no zeroing pass
            squares = torch._foreach_mul(gs, gs)
            if len(have) == len(self.params):
                self._m2 = squares
            else:
                self._m2 = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
                for i, s in zip(have, squares):
                    self._m2[i] = s
        else:
            torch._foreach_addcmul_([self._m2[i] for i in have], gs, gs)

    def second_moment(self) -> list[torch.Tensor] | None:
        """sum_k h_k^2 per parameter, float32; None when not kept or when one micro-batch is all there is in
        a single process. The caller owns it until `reset` (GradVariance transforms it in place)."""
        if not self.elementwise or (self.lazy and self.micro_batches < 2):
            return None
        return self._m2

    def reset(self) -> None:
        self.sq.zero_()
        self._m2, self.first_in_grad, self._pass = None, None, None
        self.micro_batches = 0

    def remove(self) -> None:
        self.active = False


def _grad_accumulator(param: torch.Tensor):
    """The autograd node a parameter's gradient flows into (held, so that autograd keeps this one)."""
    with torch.enable_grad():
        return param.view_as(param).grad_fn.next_functions[0][0]


def _accumulates(node) -> bool:
    """False inside torch.autograd.grad, which accumulates nothing into .grad (and says so by refusing to
    tell whether it will run a parameter's accumulator)."""
    try:
        torch._C._will_engine_execute_node(node)
        return True
    except RuntimeError:
        return False
