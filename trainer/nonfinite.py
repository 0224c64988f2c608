"""The non-finite policy (`intervention.nonfinite`): what a step whose loss or gradient is not finite does.

record: apply the update regardless (never reads a device value). skip: leave parameters and optimizer
state exactly as they were. stop: end the run naming the step. With torch's fused Adam/AdamW (and with the
skip-step AdamW of `intervention.skip_spikes`), `skip` is
decided on the device through the optimizer's `found_inf` input (the protocol of AMP's GradScaler: the
fused kernel leaves everything untouched and the step count is restored), so no value travels to the host
in the hot path; the skip events are written later, where the loop reads device values anyway. Other
optimizers read one flag per step (a host-device sync on GPUs, free on CPU).
"""

from __future__ import annotations

import torch

from .interventions import SkipStepAdamW

APPLIED, SKIPPED, STOP = "applied", "skipped", "stop"


def reads_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """True for optimizers that honour `found_inf`: torch Adam/AdamW with the fused kernel in every group,
    and the skip-step AdamW. torch's fused Adam says so by `_step_supports_amp_scaling` (what GradScaler reads
    before handing it `found_inf`, a private protocol): without the flag the guard decides on the host."""
    if isinstance(optimizer, SkipStepAdamW):
        return True
    return (
        isinstance(optimizer, torch.optim.Adam)
        and all(g.get("fused") for g in optimizer.param_groups)
        and getattr(optimizer, "_step_supports_amp_scaling", False)
    )


def message(step: int, policy: str) -> str:
    action = "skipped" if policy == "skip" else "not applied, stopping"
    return f"non-finite loss or gradient at step {step}: update {action}"


class NonFiniteGuard:
    """Steps the optimizer unless the policy says otherwise; logs its events through the monitor."""

    def __init__(self, policy: str, optimizer: torch.optim.Optimizer, monitor):
        self.policy, self.opt, self.monitor = policy, optimizer, monitor
        self.on_device = policy == "skip" and reads_found_inf(optimizer)
        self._pending: list[tuple[int, torch.Tensor]] = []
        self.last_flag: torch.Tensor | None = None
        """The device-side skip flag of the last step (1.0: skipped), recorded as `update_skipped`."""

    def apply(self, step: int, losses: list[torch.Tensor], norm: torch.Tensor) -> str:
        self.last_flag = None
        if self.policy == "record":
            self.opt.step()
            return APPLIED
        bad = ~torch.isfinite(torch.stack(losses).sum() + norm)
        if self.on_device:
            flag = bad.float()
            self.opt.found_inf = flag
            try:
                self.opt.step()
            finally:
                del self.opt.found_inf
            self._pending.append((step, flag))
            self.last_flag = flag
            return APPLIED
        if not bool(bad.item()):  # sync: this optimizer needs a host decision
            self.opt.step()
            return APPLIED
        kind = "nonfinite_skip" if self.policy == "skip" else "nonfinite_stop"
        self.monitor.log_event(kind, message(step, self.policy), step=step)
        return SKIPPED if self.policy == "skip" else STOP

    def resolve(self) -> None:
        """Log the events of the device-side skips so far: one copy to the host for all pending steps."""
        if not self._pending:
            return
        steps, flags = zip(*self._pending)
        self._pending = []
        for step, flag in zip(steps, torch.stack(flags).tolist()):
            if flag:
                self.monitor.log_event("nonfinite_skip", message(step, "skip"), step=step)
