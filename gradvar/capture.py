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

Every pass ends by noting the versions of the `.grad` tensors, after DDP's own end-of-backward callback
has written the all-reduced gradient: they tell later whether the loop changed them since
(`modified_since_end`), and, when the next pass starts, whether the loop zeroed or replaced them between two
passes of one step (`broken`). The read of `.grad` itself, |grad|^2 per parameter (`end_read`): the step's
gradient as the last backward left it, before any clipping or unscaling the loop applies after it (torch's
`clip_grad_norm_`, a closure passed to `optimizer.step`, Lightning), is taken when it is needed, not at the
end of every pass: `.grad` is then still at the versions the last pass left, so the read sees the same
numbers, once per step instead of once per pass. A loop that changes `.grad` before the monitor reads it is
seen doing so (the versions moved); from its next step on every pass is read as it ends (`eager`), so that
the last pass's read exists whatever the loop does after it. The first step of a run is read eagerly too.
A loop that changes `.grad` at a step after steps that left it alone loses that one step's read: its
pre-clip columns are NaN (`lost`), and a note says so.

The element-wise moment sum_k h_k^2 is kept only at the steps `elementwise()` says so: it streams every
micro-batch gradient through a parameter-sized buffer, two to three passes over the gradients per micro-batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from . import _torch_compat as tc
from .groups import Subsets
from .hooks import WeakHook
from .sharded import local


class GradCapture:
    """Accumulates micro-batch gradient moments between optimizer steps."""

    def __init__(
        self,
        params: list[torch.Tensor],
        subsets: Subsets,
        elementwise: bool | Callable[[], bool] = False,
        lazy: bool = True,
        grad_params: list[torch.Tensor] | None = None,
    ):
        self.params, self._subsets = params, subsets
        self.grad_params = params if grad_params is None else grad_params
        """Whose `.grad` the end-of-pass read sees: `params` itself, or under FSDP2 the sharded parameters
        (the hooks sit on the unsharded ones, whose `.grad` FSDP2 moves into the reduce-scatter)."""
        self.elementwise = bool(elementwise)
        """Whether the element-wise moment is ever kept; `_m2_on` says whether at the step under way."""
        self._elementwise_now = elementwise if callable(elementwise) else None
        self._m2_on = self.elementwise
        self.lazy = lazy
        self._sq = torch.zeros(len(params), device=params[0].device, dtype=torch.float32)
        self._norms: list[tuple[tuple, list[torch.Tensor]]] = []
        """Passes' |h_k| per parameter not yet added into `_sq`: (parameters, norms) per pass, summed together
        when `sq` is read (one foreach_norm per pass, a few small kernels per step whatever K)."""
        self._m2: list[torch.Tensor] | None = None
        self.micro_batches = 0  # a Python int: counting backward passes needs no device value
        self.first_in_grad: list[int] | None = None
        """Lazy mode: the parameters whose `.grad` still holds the first pass, not yet taken into `sq`."""
        self._pass: dict | None = None
        self._node = None  # the first parameter's gradient accumulator (see _accumulates)
        self._lock = threading.Lock()  # autograd may run hooks of devices on their own threads
        self._handles: list | None = None
        self.grad_sq_end: torch.Tensor | None = None
        """(n_params,) float32 |grad|^2 per parameter as the step's latest pass left `.grad` (None before it is
        read; see `end_read`)."""
        self._end_due = False  # the latest pass's read is not taken yet
        self.eager = True
        """Read `.grad` as each pass ends (the run's first step; a loop that changes `.grad` before the read)."""
        self._eager_next: bool | None = None
        self.lost = False
        """The latest pass's read was due when `.grad` had changed since: its numbers are gone."""
        self.end_unscaled = False
        """The read was taken after a GradScaler unscaled `.grad` (true units, the scale already divided out)."""
        self._versions: list | None = None
        self.broken: str | None = None
        """Why `.grad` no longer sums this step's passes (set when the next pass starts), or None."""
        self.on_pass_end = None  # called with no arguments after each pass's read
        self.reads_grad = True
        """False: `.grad` is not the step's gradient (see `for_moving_grads`)."""
        self.active = True

    @property
    def active(self) -> bool:
        return self._handles is not None

    @active.setter
    def active(self, on: bool) -> None:
        # Unhook while paused, not just ignore: the probes' torch.autograd.grad must not count as a pass, and
        # a paused monitor should cost nothing.
        if on and self._handles is None:
            if self.reads_grad:
                self._node = self._node or _grad_accumulator(self.params[0])
            self._handles = [p.register_hook(GradHook(self, i)) for i, p in enumerate(self.params)]
        elif not on and self._handles is not None:
            for h in self._handles:
                h.remove()
            self._handles = None

    def for_moving_grads(self) -> None:
        """DeepSpeed ZeRO moves each gradient out of `.grad` into its buckets and partitions: every pass is held
        as the hooks see it, `.grad` is never read back nor checked between passes, and no gradient
        accumulator is held (stage 3 swaps a parameter's storage between its full and an empty shape, and a
        held accumulator would keep the shape it was made with)."""
        self.lazy, self.reads_grad, self._node = False, False, None

    def _on_grad(self, i: int, grad: torch.Tensor) -> None:
        # Runs once per parameter per backward, between the backward's kernels (its code and data cold in the
        # caches): a gradient of the pass under way, the common case, takes no lock and few Python steps. Dict
        # and set operations are atomic under the GIL, and one parameter's hooks run on one device's thread.
        task, ps = tc.graph_task_id(), self._pass
        if ps is None or task not in ps["tasks"]:
            with self._lock:
                ps = self._pass  # checked again: another device's thread of this task may have joined it since
                if ps is None or task not in ps["tasks"]:
                    node = self._node if self._node is not None else tc.current_node()
                    if not tc.accumulates(node):  # torch.autograd.grad: not a micro-batch
                        return
                    ps = self._join(task)
        grads = ps["grads"]
        if ps["first"]:  # not held: a reference would make autograd copy the gradient into .grad
            grads[i] = None
            return
        # Later passes hold the gradient itself (not an alias): autograd then never moves it into a .grad that
        # DDP overwrites with the all-reduced gradient at the end of the backward.
        seen = grads.get(i)
        grads[i] = grad if seen is None else seen + grad  # reached twice in one pass: h_k is the sum

    def _join(self, task: int) -> dict:
        """The pass a backward task's gradients belong to. A task that starts while the pass has one running
        is nested in it (reentrant activation checkpointing runs a backward inside the backward); a task
        older than the pass's newest one was running all along (the pass began inside a nested task)."""
        ps = self._pass
        if ps is None or not (ps["open"] or task < max(ps["tasks"])):
            if self.micro_batches == 0 and self._elementwise_now is not None:
                self._m2_on = bool(self._elementwise_now())  # the step's first pass: its schedule decides
            self._check_unchanged()
            self._take_first()  # nothing of this backward is in .grad yet
            ps = self._pass = {
                "tasks": set(),
                "open": set(),
                "grads": {},
                "counted": False,
                "first": self.lazy and self.micro_batches == 0,
            }
        ps["tasks"].add(task)
        ps["open"].add(task)
        # runs once the task's every gradient is accumulated
        tc.at_backward_end(WeakHook(self, "_task_done", ps, task))
        return ps

    def _task_done(self, ps: dict, task: int) -> None:
        with self._lock:
            ps["open"].discard(task)
            if not ps["open"]:
                self._end_pass(ps)
                if self.reads_grad:
                    tc.at_backward_end(WeakHook(self, "_pass_read"))  # after DDP's callback, queued before this one

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

    def _pass_read(self) -> None:
        self._versions = self._now_versions()
        self.grad_sq_end, self._end_due, self.lost, self.end_unscaled = None, True, False, False
        if self.eager:
            self._read_end()
        if self.on_pass_end is not None:
            self.on_pass_end()

    def _read_end(self) -> torch.Tensor:
        """|grad|^2 per parameter now (the versions the latest pass left: the caller checked)."""
        grads = self._grads()
        have = [g if g is not None else torch.zeros(1, device=p.device) for g, p in zip(grads, self.params)]
        self.grad_sq_end, self._end_due = torch.stack(tc.foreach_norm(have, 2, dtype=torch.float32)).square(), False
        return self.grad_sq_end

    def end_read(self, unscaled: bool = False) -> torch.Tensor | None:
        """The monitor's read of the step's gradient: |grad|^2 per parameter as the latest pass left `.grad`,
        read now if it was not read when that pass ended; None before any pass, or when it was not read then
        and `.grad` has changed since (`lost`). The first call of a step decides whether the next step reads
        each pass as it ends: when `.grad` has changed by now, the loop changes it before the monitor's read.
        unscaled: a GradScaler has unscaled `.grad` since (its kernel leaves the tensors' versions as they were)."""
        changed = self.modified_since_end()
        if self._eager_next is None and self._versions is not None:
            self._eager_next = changed or unscaled
        if self._end_due:
            if changed:
                self.lost = True
                return None
            self.end_unscaled = unscaled  # a uniform change the caller knows: the read is in true units
            return self._read_end()
        return self.grad_sq_end

    def modified_since_end(self) -> bool:
        """True when a `.grad` is not the tensor, or not at the version, the latest pass left."""
        if self._versions is None:
            return False
        return self._now_versions() != self._versions

    def mark_unchanged(self) -> None:
        """The caller changed `.grad` in a way it accounts for itself (Monitor.clip_grad_norm_), after reading it."""
        self._versions = self._now_versions()

    def _now_versions(self) -> list:
        return [None if g is None else (id(g), g._version) for g in self._grads()]

    def _grads(self) -> list:
        return [None if p.grad is None else local(p.grad) for p in self.grad_params]

    def _check_unchanged(self) -> None:
        if self.reads_grad and self.micro_batches and self.broken is None and self.modified_since_end():
            gone = sum(g is None for g, seen in zip(self._grads(), self._versions) if seen is not None)
            self.broken = f".grad of {gone} parameters was set to None" if gone else ".grad was zeroed or replaced"
            self.first_in_grad = None  # .grad no longer holds the first pass

    def _take_first(self) -> None:
        """Move the first pass, still alone in `.grad`, into the moments (lazy mode, K >= 2). Its squared
        norms are the pass-end read's: `.grad` has not changed since (else `broken` is set)."""
        if self.first_in_grad is not None:
            have, self.first_in_grad = self.first_in_grad, None
            self._sq += self.grad_sq_end if not self._end_due else self._read_end()
            if self._m2_on:
                self._accumulate(have, [self.params[i].grad for i in have], norms=False)

    def _accumulate(self, have: list[int], gs: list[torch.Tensor], norms: bool = True) -> None:
        if norms:  # one multi-tensor kernel; summed with the other passes' when `sq` is read
            self._norms.append((tuple(have), tc.foreach_norm(gs, 2, dtype=torch.float32)))
        if not self._m2_on:
            return
        gs = [g if g.dtype == torch.float32 else g.float() for g in gs]
        if self._m2 is None:  # the step's first contribution: write h^2, no zeroing pass
            squares = tc.foreach_pow(gs, 2)
            if len(have) == len(self.params):
                self._m2 = squares
            else:
                self._m2 = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
                for i, s in zip(have, squares):
                    self._m2[i] = s
        else:
            tc.foreach_addcmul_([self._m2[i] for i in have], gs, gs)

    @property
    def sq(self) -> torch.Tensor:
        """(n_params,): sum over this step's taken passes of |h_k|^2 per parameter (see `first_in_grad`)."""
        if self._norms:
            pending, self._norms = self._norms, []
            full = tuple(range(len(self.params)))
            if all(have == full for have, _ in pending):  # every pass reached every parameter: one stack
                flat = torch.stack([n for _, norms in pending for n in norms]).square()
                self._sq += flat.view(len(pending), -1).sum(0)
            else:
                for have, norms in pending:
                    self._sq.index_add_(0, self._subsets(have).index, torch.stack(norms).square())
        return self._sq

    def second_moment(self) -> list[torch.Tensor] | None:
        """sum_k h_k^2 per parameter, float32; None when not kept (at this step) or when one micro-batch is all
        there is in a single process. The caller owns it until `reset` (GradVariance transforms it in place)."""
        if not self._m2_on or (self.lazy and self.micro_batches < 2):
            return None
        return self._m2

    def reset(self) -> None:
        if self._eager_next is not None:
            # read every pass as it ends where the loop changed .grad before the monitor's read, or a read was lost
            self.eager = self._eager_next or self.lost
        self._sq.zero_()
        self._norms, self._m2, self.first_in_grad, self._pass = [], None, None, None
        self.grad_sq_end, self._versions, self.broken = None, None, None
        self._end_due, self.lost, self.end_unscaled, self._eager_next = False, False, False, None
        self.micro_batches = 0

    def remove(self) -> None:
        self.active = False


class GradHook(WeakHook):
    """A parameter's gradient pre-hook: `WeakHook(capture, "_on_grad", i)` in fewer Python steps (it runs once
    per parameter per backward pass)."""

    __slots__ = ()

    def __init__(self, owner: GradCapture, i: int):
        super().__init__(owner, "_on_grad", i)

    def __call__(self, grad: torch.Tensor) -> None:
        owner = self._ref()
        if owner is not None:
            owner._on_grad(self._bound[0], grad)


def _grad_accumulator(param: torch.Tensor):
    """The autograd node a parameter's gradient flows into (held, so that autograd keeps this one)."""
    with torch.enable_grad():
        return param.view_as(param).grad_fn.next_functions[0][0]
