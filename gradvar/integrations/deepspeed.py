"""DeepSpeed ZeRO (stages 1, 2, 3): the monitor on a `deepspeed.initialize` engine.

    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=cfg)
    mon = gradvar.DeepSpeedMonitor(engine, "runs/x", "paper")
    for mb in micro_batches:  # gradient accumulation as the DeepSpeed config sets it
        loss = engine(input_ids=mb, labels=mb).loss
        engine.backward(loss)
        engine.step()
        mon.step()  # records a row when the engine has taken an optimizer step, else returns
    mon.close()

The same columns as under DDP, from each rank's flat ZeRO partitions (gradvar.zero), combined across
ranks at flush: grad_norm (global, before DeepSpeed's `gradient_clipping`; grad_norm_clipped after it),
Adam's state and the update size per parameter group. The per-micro-batch squared norms come from hooks on
the model's parameters, which see each rank's micro-batch gradient before DeepSpeed reduces it (at the
boundary under stage 1, in buckets during the backward under stage 2 and 3). grad_var_max is NaN (a note
says why). DeepSpeed clips by itself: `Monitor.clip_grad_norm_` does not apply.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch

from .. import quantities as Q
from ..loop_hooks import LoopHooks
from ..monitor import PROBE_OPTIONS, Monitor
from ..pre_clip import PreClip
from ..quantities.base import MAX, MIN, SUM, Stat
from ..zero import ZeroSteps


class ZeroGradNorm(Q.GradNorm):
    """The reduced gradient's partitions, read before each partition's update: DeepSpeed has clipped them by
    then, by one factor that is known exactly (`ZeroSteps._clip_coef`), so the pre-clip squares are exact."""

    reads_state = False  # ZeroSteps' partition statistics

    def on_grads(self, ctx):
        s = ctx.optimizer.stats
        if not s:
            return {}
        return {
            "grad_sq_group": Stat(s["grad_sq"] * s["clip_coef"].square(), SUM),
            "grad_sq_applied": Stat(s["grad_sq"].sum(), SUM),
            "nonfinite_grad": Stat(s["bad"], SUM),
        }


class ZeroAdamState(Q.AdamState):
    reads_state = False

    def on_after_step(self, ctx):
        s = ctx.optimizer.stats
        if not s or not ctx.optimizer.has_state:
            return {}
        return {
            "v_max_group": Stat(s["v_max"], MAX),
            "v_l1_group": Stat(s["v_l1"], SUM),
            "v_min_group": Stat(s["v_min"], MIN),
            "v_numel_group": Stat(s["v_numel"], SUM),  # each element is in one partition: the sum counts it once
            "m_sq": Stat(s["m_sq"], SUM),
        }


class ZeroUpdateSize(Q.UpdateSize):
    needs_snapshot = False  # ZeroSteps copies each partition before its update instead of the model
    reads_state = False

    def on_after_step(self, ctx):
        s = ctx.optimizer.stats
        if not s:
            return {}
        return {"update_sq_group": Stat(s["update_sq"], SUM), "param_sq_group": Stat(s["param_sq"], SUM)}


class ZeroProbeLoss(Q.ProbeLoss):
    """Under stage 3 a forward gathers each layer's parameters from every rank: all ranks run the probe."""

    stage3 = False

    def on_step(self, ctx):
        return super().on_step(dataclasses.replace(ctx, sharded=True) if self.stage3 else ctx)


def for_zero(quantities: list, stage: int) -> tuple[list, list[str]]:
    """The ZeRO forms of the quantities that read gradients, optimizer state or parameters, and the names of
    those dropped (those that need whole parameters: the sequence-length probe's torch.autograd.grad would run
    DeepSpeed's reduce hooks). A quantity that reads them and has no ZeRO form is refused: it would read the
    model's empty or stale tensors, not the partitions."""
    quantities, dropped = Q.shard_local(quantities)
    out = []
    for q in quantities:
        swap = {Q.GradNorm: ZeroGradNorm, Q.AdamState: ZeroAdamState, Q.UpdateSize: ZeroUpdateSize}.get(type(q))
        if type(q) is Q.ProbeLoss:
            swap = ZeroProbeLoss
        if swap is not None:
            z = swap.__new__(swap)
            z.__dict__.update(q.__dict__)
            z.stage3 = stage == 3
            q = z
        elif type(q) is Q.GradVariance:
            z = copy.copy(q)  # the caller's quantity stays as it was
            z.needs_elementwise = False
            q = z
        elif q.reads_state:
            raise ValueError(
                f"gradvar.DeepSpeedMonitor: the {q.name} quantity reads parameters, gradients or optimizer state, "
                "which ZeRO keeps in its own flat partitions, and has no ZeRO form (reads_state = False when it "
                "reads none of them)"
            )
        out.append(q)
    return out, dropped


def _check(engine) -> int:
    stage = int(engine.zero_optimization_stage())
    if stage not in (1, 2, 3):
        raise ValueError(
            f"gradvar.DeepSpeedMonitor is for ZeRO stages 1-3 (this engine runs stage {stage}); without ZeRO "
            "use gradvar.Monitor(engine.module, engine.optimizer, ...)"
        )
    if engine.fp16_enabled():
        raise ValueError(
            "gradvar.DeepSpeedMonitor does not handle DeepSpeed's fp16 loss scaling (its dynamic scale changes "
            "between the backward and the clipping); use bf16 or fp32"
        )
    if getattr(engine.optimizer, "cpu_offload", False) or getattr(engine.optimizer, "offload_optimizer", False):
        raise ValueError("gradvar.DeepSpeedMonitor does not read ZeRO-Offload's optimizer partitions")
    flat = "fp32_partitioned_groups_flat" if stage == 3 else "single_partition_of_fp32_groups"
    if not hasattr(engine.optimizer, flat):
        raise ValueError(
            f"gradvar.DeepSpeedMonitor reads DeepSpeed's ZeRO optimizer ({flat}); this engine steps a "
            f"{type(engine.optimizer).__name__}"
        )
    if not isinstance(engine.optimizer.optimizer, torch.optim.Optimizer):
        raise ValueError("gradvar.DeepSpeedMonitor needs a torch optimizer inside DeepSpeed's (AdamW, Adam)")
    return stage


class ZeroLoopHooks(LoopHooks):
    def pre_clip(self):
        # per-parameter norms of the whole gradient exist on no rank: NaN for anything that would ask
        return PreClip(torch.full((len(self.params),), math.nan, device=self.capture.sq.device))


class DeepSpeedMonitor(Monitor):
    """gradvar.Monitor on a DeepSpeed ZeRO engine; takes Monitor's keyword options."""

    loop_class = ZeroLoopHooks

    def __init__(self, engine, run_dir, quantities="paper", **kwargs):
        stage = _check(engine)
        probe = {k: kwargs.pop(k, None) for k in PROBE_OPTIONS}
        qs, self._dropped = for_zero(Q.resolve(quantities, probe), stage)
        steps = ZeroSteps(engine.optimizer, stage)
        try:
            super().__init__(engine.module, steps, run_dir, qs, **kwargs)
            steps.bind(self.params, self.subsets.all.groups.tolist(), len(self.groups), _wants_update(qs))
        except BaseException:
            steps.remove()
            raise
        self.engine, self.stage, self._engine_steps = engine, stage, engine.global_steps
        self.capture.for_moving_grads()

    def step(self, loss=None, **kwargs) -> None:
        """Call after every engine.step(): a row is recorded when the engine took an optimizer step (the
        accumulation boundary); the micro-batches before it only accumulate."""
        if self.engine.global_steps == self._engine_steps:
            return
        self._engine_steps = self.engine.global_steps
        super().step(loss, **kwargs)

    def clip_grad_norm_(self, max_norm: float, foreach=None):
        raise RuntimeError(
            "under DeepSpeed the engine clips: set gradient_clipping in its config; grad_norm records the norm "
            "before it, grad_norm_clipped after it"
        )

    def _notes(self, step) -> None:
        super()._notes(step)
        n = self.step_num
        if any(isinstance(q, Q.GradVariance) for q in self.quantities):
            self._note_once(
                "zero_elementwise",
                f"step {n}: grad_var_max is NaN under DeepSpeed ZeRO: the element-wise variance needs every "
                "rank's micro-batch gradients element by element, and a rank holds only its own and a partition "
                "of their mean; grad_var_sum, grad_trace_sigma and grad_true_sq are exact",
            )
        if any(isinstance(q, Q.AdamState) for q in self.quantities):
            self._note_once(
                "zero_vhat",
                f"step {n}: adam_vhat_max and adam_vhat_l1 are NaN under DeepSpeed ZeRO: the bias correction "
                "needs each partition's own step count, which this reader does not take yet; the raw "
                "adam_v_max, adam_v_l1 and adam_v_min are exact",
            )
        for name in self._dropped:
            self._note_once(
                f"zero_{name}",
                f"step {n}: the {name} quantity does not run under DeepSpeed ZeRO (its gradients would pass "
                "through DeepSpeed's reduce hooks into the partitions); its table stays empty",
            )

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.optimizer.remove()


def _wants_update(quantities) -> bool:
    return any(isinstance(q, ZeroUpdateSize) for q in quantities)
