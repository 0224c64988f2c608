"""How the monitor hears the loop: forward hooks (inputs and losses), the optimizer's step hooks (the gradient
read before clipping, the update), the end of each backward pass, and clipping that reuses the read norm.

`LoopHooks` owns the hooks, the gradient capture and the step under way (a gradvar.step.MonitorStep, fresh for
each step), which it fills through the step's methods; the monitor closes the step and starts the next one.
The hooks hold the owner weakly (gradvar.hooks): copies of the model stay possible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import torch

from . import _torch_compat as tc
from . import notes, sharded
from . import quantities as Q
from .capture import GradCapture
from .groups import Subsets, build_groups, trainable_params
from .hooks import WeakHook
from .inputs import describe, loss_share, output_loss
from .pre_clip import PreClip, pre_clip
from .step import MonitorStep


def torch_optimizer(optimizer):
    """The torch optimizer inside the wrappers that loops step: accelerate's AcceleratedOptimizer, Lightning's
    LightningOptimizer, any wrapper that keeps it at `.optimizer`. The step hooks go on it, and its state and
    param groups are read there (a wrapper need not run Optimizer.__init__, so it may have no hooks of its own)."""
    seen = set()
    while isinstance(inner := getattr(optimizer, "optimizer", None), torch.optim.Optimizer) and id(inner) not in seen:
        seen.add(id(optimizer))
        optimizer = inner
    if not callable(getattr(optimizer, "register_step_pre_hook", None)):
        raise TypeError(
            f"gradvar.Monitor needs a torch.optim.Optimizer, or a wrapper that holds one at .optimizer; got a "
            f"{type(optimizer).__name__}"
        )
    return optimizer


def no_step_due(stepper) -> bool:
    """The optimizer that the loop steps says its latest step() took no step by design: accelerate's
    AcceleratedOptimizer steps only when `accelerator.sync_gradients`, on the last micro-batch of
    `accelerator.accumulate` (its zero_grad waits as well, so `.grad` goes on summing the micro-batches)."""
    state = getattr(stepper, "gradient_state", None)
    return getattr(state, "sync_gradients", True) is False


class LoopHooks:
    """The hooks of one monitor and the step under way.

    note_once(reason, message) and log_event(kind, message, value=) are the monitor's: what the hooks find out
    about the loop's wiring goes to the run's notes and events."""

    def __init__(
        self,
        module,
        optimizer,
        quantities,
        world_size: int,
        rank: int,
        *,
        infer_inputs: bool,
        grad_scaler,
        note_once,
        log_event,
    ):
        self.module, self.optimizer, self.quantities = module, optimizer, quantities
        self.world_size, self.rank = world_size, rank
        self.grad_scaler = grad_scaler
        """The GradScaler whose scaled losses the loop backpropagates: given, or found in the optimizer step."""
        self._note_once, self._log_event = note_once, log_event
        self._snapshot = self._loss_share = None
        self.step = MonitorStep(1)
        """The step under way; `begin_step` starts the next."""
        self._hook_params()
        self._handles = self._install_hooks(infer_inputs)

    def _hook_params(self) -> None:
        names, self.params = trainable_params(self.module)
        self.groups, gidx = build_groups(names)
        self.subsets = Subsets(self.params, gidx, len(self.groups))
        self.group_index = self.subsets.all.groups
        self.sharded = sharded.is_sharded(self.module)
        """FSDP2: the capture hooks the unsharded parameters (the per-rank gradient before the reduce-scatter);
        the element-wise variance would need every rank's micro-batch gradients per element: not kept."""
        elementwise = any(q.needs_elementwise for q in self.quantities) and not self.sharded
        unsharded = sharded.unsharded_params if self.sharded else lambda _, params: contextlib.nullcontext(params)
        with unsharded(self.module, self.params) as hooked:
            self.capture = GradCapture(
                hooked,
                self.subsets,
                elementwise=WeakHook(self, "_elementwise_now") if elementwise else False,
                lazy=self.world_size == 1,
                grad_params=self.params,
            )
        self.capture.on_pass_end = WeakHook(self, "_after_pass")

    def _install_hooks(self, infer_inputs):
        # weak hooks: deepcopy, torch.save(model) and EMA copies of the model keep working (gradvar.hooks)
        handles = [
            self.optimizer.register_step_pre_hook(WeakHook(self, "_pre_step")),
            self.optimizer.register_step_post_hook(WeakHook(self, "_post_step")),
        ]
        if infer_inputs:
            handles.append(self.module.register_forward_pre_hook(WeakHook(self, "_on_forward_pre"), with_kwargs=True))
            handles.append(self.module.register_forward_hook(WeakHook(self, "_on_forward")))
        for q in self.quantities:
            if hasattr(q, "attach"):  # a quantity that reads the training forwards: it asks the step under way
                q.attach(self.module, WeakHook(self, "_step_number"))
        return handles

    def _step_number(self) -> int:
        return self.step.number

    def remove(self) -> None:
        """Take every hook off the model, the optimizer and the parameters."""
        for h in self._handles:
            h.remove()
        for q in self.quantities:
            if hasattr(q, "detach"):
                q.detach()
        self.capture.remove()

    # ----------------------------------------------------------------- the steps
    def begin_step(self, number: int) -> None:
        """The previous step closed: `number` is under way, with nothing captured yet."""
        self.capture.reset()
        self.step = MonitorStep(number)

    def renumber(self, number: int) -> None:
        """The run's step count changed (a checkpoint loaded): the step under way is `number`."""
        self.step.renumber(number)

    def scheduled(self) -> list:
        """The quantities that run at the step under way."""
        step = self.step.number
        return [q for q in self.quantities if q.schedule(step)]

    def ctx(self) -> Q.StepContext:
        """What the quantities see of the step under way, now."""
        step = self.step
        return Q.StepContext(
            step.number,
            self.module,
            self.optimizer,
            tuple(self.params),
            self.group_index,
            len(self.groups),
            self.capture,
            self.subsets,
            self.world_size,
            step.facts,
            self.sharded,
            self.rank,
            step.side_rows,
        )

    def close_grads(self, loss, grad_norm) -> None:
        """Monitor.step: the step's gradient statistics (read now if no optimizer step read them) and what the
        quantities' on_step needs besides them."""
        step, cap = self.step, self.capture
        if not step.grads_read and cap.micro_batches and all(p.grad is None for p in self.params):
            # no optimizer step and `.grad` set to None since (zero_grad after a GradScaler's skip): only NaN
            step.gradient_gone(cap.micro_batches)
            self._note_once(*notes.grads_cleared(step.number))
        if not step.grads_read and (cap.micro_batches or any(p.grad is not None for p in self.params)):
            self.read_grads(no_update=True)  # no optimizer step (a GradScaler skipped it, or none was taken)
        if step.stale_read:
            self._note_once(*notes.backward_after_read(step.number))
        step.close(loss, grad_norm)

    @contextlib.contextmanager
    def paused(self):
        # GradCapture.active is the capture's own on/off switch (the probes turn it off the same way)
        was, self.capture.active = self.capture.active, False
        try:
            yield
        finally:
            self.capture.active = was

    # ----------------------------------------------------------------- the hooks
    def _recording(self) -> bool:
        """A forward that can feed a backward pass of the step: any mode (eval mode too), gradients on."""
        return self.capture.active and torch.is_grad_enabled()

    def _on_forward_pre(self, mod, args, kwargs):
        self._loss_share = None
        if self._recording():
            self.step.saw_forward(describe(args, kwargs))  # shapes are host values: no sync
            self._loss_share = loss_share(kwargs)

    def _on_forward(self, mod, args, out):
        loss = output_loss(out) if self._recording() else None
        if loss is not None:
            loss = loss.detach().float().reshape(())
            if self._loss_share is not None:  # the micro-batch's share of the step loss: back to its mean
                total, count = self._loss_share
                loss = loss * total / count
            self.step.saw_loss(loss)

    def _elementwise_now(self) -> bool:
        """Whether the step under way keeps the element-wise moment: a quantity that needs it runs at this step
        (its own schedule, and its `elementwise_at` where it has one)."""
        step = self.step.number
        return any(
            q.needs_elementwise and q.schedule(step) and getattr(q, "elementwise_at", _always)(step)
            for q in self.quantities
        )

    def _after_pass(self):
        self.step.pass_ended()

    def read_grads(self, no_update: bool = False):
        """Run the quantities that need the step's gradient before clipping (once per step). no_update: read at
        Monitor.step, with no optimizer step taken (not at a clip before one)."""
        step = self.step
        if step.grads_read:
            return
        cap = self.capture
        before = self.pre_clip()
        if no_update and cap.modified_since_end():  # read at Monitor.step, after the loop changed .grad
            before = dataclasses.replace(before, applied_unknown=True)
        step.read(cap.micro_batches, before, None if self.grad_scaler is None else tc.scaler_scale(self.grad_scaler))
        ctx = self.ctx()
        for q in self.scheduled():
            if not (cap.broken and q.needs_micro_batches):
                step.add_grad_stats(q.on_grads(ctx))
        if cap.broken:
            self._note_once(*notes.grads_changed_between_passes(step.number, cap.broken))
        if cap.lost:
            self._note_once(*notes.read_lost(step.number))

    def _pre_step(self, optimizer, args, kwargs):
        if self.grad_scaler is None and (scaler := tc.calling_scaler()) is not None:
            self.grad_scaler = scaler  # the step runs inside scaler.step(optimizer): it scaled the losses
            self._log_event("note", notes.SCALER_ADOPTED, value=1.0)
        # the LR this update applies: loops (HF Trainer too) step their scheduler before Monitor.step
        lr, snapshot = optimizer.param_groups[0].get("lr", math.nan), None
        if any(q.needs_snapshot for q in self.scheduled()):
            params = [sharded.local(p.detach()) for p in self.params]
            if self._snapshot is None:
                self._snapshot = [torch.empty_like(p) for p in params]
            tc.foreach_copy_(self._snapshot, params)
            snapshot = self._snapshot
        self.step.stepping(lr, snapshot)

    def _post_step(self, optimizer, args, kwargs):
        # after the update, not before it: a closure passed to optimizer.step (Lightning's automatic
        # optimization among others) runs the step's last forward and backward inside the step
        self.read_grads()
        ctx = self.ctx()
        for q in self.scheduled():
            self.step.add_stats(q.on_after_step(ctx))
        self.step.updated()

    def clip_grad_norm_(self, max_norm: float, foreach: bool | None = None) -> torch.Tensor:
        """Monitor.clip_grad_norm_."""
        # the step's passes are over when the loop clips: read now, while .grad is the pre-clip gradient (a
        # backward after this still shows, see _after_pass)
        fresh = not self.step.grads_read
        self.read_grads()
        changed = self.capture.modified_since_end()
        # a read taken just now is .grad as it is: reuse it; after an earlier read, .grad may have changed since
        before = self.step.facts.pre_clip if fresh else self.pre_clip()
        now_sq = before.grad_sq if before.applied_sq is None else before.applied_sq  # .grad as it is now
        sq = now_sq.sum()
        norm = (sharded.global_sq_sum(sq) if self.sharded else sq).sqrt()  # FSDP2: over all shards
        if math.isinf(max_norm):
            return norm
        # torch's rule: coefficient max_norm / (norm + 1e-6), clamped to 1, always applied (`foreach` is
        # accepted for torch's signature; the multiply is always one multi-tensor kernel)
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        grads = [sharded.local(p.grad) for p in self.params if p.grad is not None]
        if grads:
            tc.foreach_mul_(grads, coef)
        if not changed:  # the monitor knows this change exactly: no norm of the clipped gradient needed
            self.step.clipped(coef)
            self.capture.mark_unchanged()
        else:  # the loop changed .grad after the read: the coefficient applies to .grad as the loop left it
            self.step.clipped(coef, now_sq)
        return norm

    def pre_clip(self) -> PreClip:
        """The step's gradient before clipping and unscaling (gradvar.pre_clip), as `.grad` holds it now."""
        s = self.grad_scaler
        # the scale of this step's backward passes (it changes in scaler.update(), after the step)
        scale = None if s is None else tc.scaler_scale(s)
        unscaled = s is not None and tc.scaler_unscaled(s, self.optimizer)
        return pre_clip(self.capture, self.params, scale, unscaled, self.step.clip_coef)


def _always(step: int) -> bool:
    return True
