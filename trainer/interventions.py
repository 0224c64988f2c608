"""Spike interventions (off by default).

Skip-step: decide on the device whether this step's loss or gradient norm is a z spike (the same rule as
gradvar.spikes, computed in torch) and apply the AdamW update multiplied by keep in {0, 1}: a skipped step
leaves parameters and optimizer state exactly as they were, and no value travels to the host (as in
OLMo-core's skip-step optimizer).

Rewind: on a loss spike, reload the newest checkpoint and skip the next batches (as PaLM did). This is a
host decision by nature: it reads the loss once per step.
"""

from __future__ import annotations

import math

import torch

from gradvar.spikes import SpikeRule


class DeviceZGate:
    """Online z-spike rule on the device for a stream of scalars (loss, grad norm)."""

    def __init__(self, rule: SpikeRule, device):
        self.rule = rule
        self.buf = torch.zeros(rule.z_window, device=device)
        self.count = torch.zeros((), device=device)
        self.pos = 0  # host-side ring position: advances every step, needs no device value

    def is_spike(self, value: torch.Tensor) -> torch.Tensor:
        """Boolean tensor: z > k and a rise of at least min_rise over the window mean, or non-finite."""
        n = self.count.clamp(max=self.rule.z_window)
        valid = torch.arange(self.rule.z_window, device=self.buf.device) < n
        mean = (self.buf * valid).sum() / n.clamp(min=1)
        var = (((self.buf - mean) * valid) ** 2).sum() / n.clamp(min=1)
        std = var.sqrt()
        z_hit = (
            (n >= self.rule.z_min_history) & (value - mean > self.rule.z_k * std) & (value - mean >= self.rule.min_rise)
        )
        return z_hit | ~torch.isfinite(value)

    def push(self, value: torch.Tensor) -> None:
        """Add a finite value to the window (non-finite values are left out, as the host rule does)."""
        ok = torch.isfinite(value)
        slot = self.pos % self.rule.z_window
        self.buf[slot] = torch.where(ok, value, self.buf[slot])
        self.count += ok.float()
        self.pos += 1


class SkipStepAdamW(torch.optim.Optimizer):
    """AdamW whose update is multiplied by a device tensor `keep` (1: apply, 0: skip exactly).

    State keys match torch.optim.AdamW (exp_avg, exp_avg_sq, step), so gradvar reads it the same way.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.keep = None

    @torch.no_grad()
    def step(self, closure=None):
        keep = self.keep
        found = getattr(self, "found_inf", None)  # the fused-kernel protocol: 1.0 skips this update too
        if found is not None:
            keep = 1.0 - found if keep is None else keep * (1.0 - found)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), device=p.device)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                k = torch.ones((), device=p.device) if keep is None else keep.to(p.dtype)
                g = torch.nan_to_num(p.grad, nan=0.0, posinf=0.0, neginf=0.0) * k
                st["step"] += k
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.add_(k * (1 - beta1) * (g - m))
                v.add_(k * (1 - beta2) * (g * g - v))
                t = st["step"].clamp(min=1)
                denom = (v / (1 - beta2**t)).sqrt().add_(group["eps"])
                update = (m / (1 - beta1**t)) / denom + group["weight_decay"] * p
                p.add_(-group["lr"] * k * update)
        return None


def spike_keep(gates: list[tuple[DeviceZGate, torch.Tensor]]) -> torch.Tensor:
    """keep = 1 unless any gated value is a spike; every value then joins its window."""
    spike = torch.zeros((), dtype=torch.bool, device=gates[0][1].device)
    for gate, value in gates:
        spike = spike | gate.is_spike(value)
    keep = (~spike).float()
    for gate, value in gates:
        gate.push(value)
    return keep


def rewind(trainer, spike_step: int, loss: float) -> bool:
    """Reload the newest checkpoint, keep the data stream where it is and skip the next batches."""
    from . import checkpoint as ckpt

    trainer.monitor.flush()
    found = trainer.par.load_latest(trainer.run_dir, trainer.model, trainer.opt, trainer.log)
    if found is None:
        return False
    state, path = found
    ckpt.restore_rng(state)
    trainer.step, trainer.tokens = int(state["step"]), int(state["tokens"])
    n = trainer.cfg.intervention.rewind_skip_batches
    trainer.sampler.skip(n, trainer.cfg.optim.batch_size)
    mon = trainer.monitor
    mon.truncate_after(trainer.step)  # the steps table keeps one row per step; the event keeps the spike
    mon.load_state_dict(state["monitor"])
    mon.log_event(
        "rewind",
        f"loss spike {loss:.4g} at step {spike_step}: rewound to {path.name}, skipped {n} batches",
        value=loss,
        step=spike_step,
    )
    return True


def rewind_needed(loss: float, best: float, rule: SpikeRule) -> bool:
    """A loss spike by the ratio rule (the host side of the PaLM-style rewind)."""
    return not math.isfinite(loss) or (
        math.isfinite(best) and loss / best > rule.ratio_threshold and loss - best >= rule.min_rise
    )
