"""How the monitor hears the loop: forward hooks (inputs and losses), the optimizer's step hooks (the gradient
read before clipping, the update), the end of each backward pass, and clipping that reuses the read norm.

A base class of Monitor: it reads and writes the monitor's per-step state (`_inputs`, `_extras`,
`_grad_stats`, `_pending`, `_grads_read`, `_stale_read`, `_clip_coef`, `_took_step`), which
Monitor._reset_step sets up.
"""

from __future__ import annotations

import contextlib
import math

import torch

from . import _torch_compat as tc
from . import notes, sharded
from . import quantities as Q
from .capture import GradCapture
from .groups import Subsets, build_groups, trainable_params
from .hooks import WeakHook
from .inputs import describe, loss_share, output_loss
from .pre_clip import pre_clip


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
    def _hook_loop(self, infer_inputs: bool) -> None:
        self._snapshot = self._loss_share = None
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
            if hasattr(q, "attach"):
                q.attach(self.module)
        return handles

    def _recording(self) -> bool:
        """A forward that can feed a backward pass of the step: any mode (eval mode too), gradients on."""
        return self.capture.active and torch.is_grad_enabled()

    def _on_forward_pre(self, mod, args, kwargs):
        self._loss_share = None
        if self._recording():
            self._inputs.add(describe(args, kwargs))  # shapes are host values: no sync
            self._loss_share = loss_share(kwargs)

    def _on_forward(self, mod, args, out):
        loss = output_loss(out) if self._recording() else None
        if loss is not None:
            loss = loss.detach().float().reshape(())
            if self._loss_share is not None:  # the micro-batch's share of the step loss: back to its mean
                total, count = self._loss_share
                loss = loss * total / count
            self._inputs.losses.append(loss)

    def _elementwise_now(self) -> bool:
        """Whether the step under way keeps the element-wise moment: a quantity that needs it runs at this step
        (its own schedule, and its `elementwise_at` where it has one)."""
        step = self.step_num + 1
        return any(
            q.needs_elementwise and q.schedule(step) and getattr(q, "elementwise_at", _always)(step)
            for q in self.quantities
        )

    def _after_pass(self):
        if self._grads_read:  # the gradient statistics were taken before this pass reached .grad
            self._stale_read = True

    def _ctx(self) -> Q.StepContext:
        return Q.StepContext(
            self.step_num + 1,
            self.module,
            self.optimizer,
            tuple(self.params),
            self.group_index,
            len(self.groups),
            self.capture,
            self.subsets,
            self.world_size,
            self._facts,
            self.sharded,
            self.rank,
            self._side_rows,
        )

    def _read_grads(self):
        """Run the quantities that need the step's gradient before clipping (once per step)."""
        if self._grads_read:
            return
        self._grads_read = True
        cap = self.capture
        before = self._pre_clip()
        self._facts.read(
            cap.micro_batches, before, None if self.grad_scaler is None else tc.scaler_scale(self.grad_scaler)
        )
        ctx = self._ctx()
        for q in self._scheduled():
            if not (cap.broken and q.needs_micro_batches):
                self._grad_stats.update(q.on_grads(ctx))
        if cap.broken:
            self._note_once(*notes.grads_changed_between_passes(self.step_num + 1, cap.broken))
        if cap.lost:
            self._note_once(*notes.read_lost(self.step_num + 1))

    def _pre_step(self, optimizer, args, kwargs):
        self._took_step = True
        if self.grad_scaler is None and (scaler := tc.calling_scaler()) is not None:
            self.grad_scaler = scaler  # the step runs inside scaler.step(optimizer): it scaled the losses
            self.log_event("note", notes.SCALER_ADOPTED, value=1.0)
        # the LR this update applies: loops (HF Trainer too) step their scheduler before Monitor.step
        lr, snapshot = optimizer.param_groups[0].get("lr", math.nan), None
        if any(q.needs_snapshot for q in self._scheduled()):
            params = [sharded.local(p.detach()) for p in self.params]
            if self._snapshot is None:
                self._snapshot = [torch.empty_like(p) for p in params]
            tc.foreach_copy_(self._snapshot, params)
            snapshot = self._snapshot
        self._facts.stepping(lr, snapshot)

    def _post_step(self, optimizer, args, kwargs):
        # after the update, not before it: a closure passed to optimizer.step (Lightning's automatic
        # optimization among others) runs the step's last forward and backward inside the step
        self._read_grads()
        ctx = self._ctx()
        for q in self._scheduled():
            self._pending.update(q.on_after_step(ctx))
        self._facts.updated()

    def _scheduled(self):
        step = self.step_num + 1
        return [q for q in self.quantities if q.schedule(step)]

    def clip_grad_norm_(self, max_norm: float, foreach: bool | None = None) -> torch.Tensor:
        """Clip like torch.nn.utils.clip_grad_norm_, reusing the norm the monitor read at the end of the last
        backward pass (one pass over the gradients fewer, and the gradient statistics read before the
        multiply). torch's own function works as well: the monitor records the gradient before it either
        way. max_norm=inf only measures."""
        # the step's passes are over when the loop clips: read now, while .grad is the pre-clip gradient (a
        # backward after this still shows, see _after_pass)
        self._read_grads()
        changed = self.capture.modified_since_end()
        before = self._pre_clip()
        sq = (before.grad_sq if before.applied_sq is None else before.applied_sq).sum()
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
            self._clip_coef = coef if self._clip_coef is None else self._clip_coef * coef
            self.capture.mark_unchanged()
            self._facts.clipped(self._clip_coef)
        return norm

    def _pre_clip(self):
        s = self.grad_scaler
        # the scale of this step's backward passes (it changes in scaler.update(), after the step)
        scale = None if s is None else tc.scaler_scale(s)
        unscaled = s is not None and tc.scaler_unscaled(s, self.optimizer)
        return pre_clip(self.capture, self.params, scale, unscaled, self._clip_coef)


def _always(step: int) -> bool:
    return True
