"""The once-per-run notes: why a column stays empty, or what the monitor did about the loop's wiring.

Each function returns (reason, message); the monitor writes each reason once (a `note` event, and notify() on
rank 0), so the messages live here, beside each other, rather than inside the step logic.
"""

from __future__ import annotations

Note = tuple[str, str]


def grads_changed_between_passes(step: int, broken: str) -> Note:
    return (
        "grads_changed_between_passes",
        f"step {step}: {broken} between two "
        "backward passes of one step (zero_grad inside the accumulation loop?), so .grad no longer "
        "sums the step's micro-batches: the gradient-variance columns are NaN for such steps",
    )


def read_lost(step: int) -> Note:
    return (
        "read_lost",
        f"step {step}: the loop changed .grad (clipping, unscaling, zero_grad) before the monitor read it, "
        "at a step after steps where it left .grad alone, so the monitor had not read the last backward "
        "pass as it ended: the pre-clip gradient columns (grad_norm, grad_true_sq, grad_trace_sigma, "
        "grad_noise_scale, grad_var_*, nonfinite_grad) are NaN for that step; every later step is read as each "
        "pass ends",
    )


def backward_after_read(step: int) -> Note:
    return (
        "backward_after_read",
        f"step {step}: a backward pass ran after "
        "optimizer.step() and before Monitor.step(): the gradient columns are NaN for such steps; "
        "call Monitor.step() right after the optimizer step",
    )


def single_micro_batch(step: int) -> Note:
    return (
        "single_micro_batch",
        f"step {step} had one micro-batch (one backward, one process): the "
        "gradient-variance columns (grad_trace_sigma, grad_true_sq, grad_noise_scale, grad_var_*) "
        "are NaN for such steps; they need K >= 2 micro-batches per step (gradient accumulation "
        "or DDP ranks)",
    )


def no_optimizer_step(step: int) -> Note:
    return (
        "no_optimizer_step",
        f"step {step}: no optimizer step ran since the previous Monitor.step() (a GradScaler skipped it for "
        "non-finite gradients, optimizer.step() was not called, or a wrapper took no step that the monitor could "
        "not tell): the row holds the gradient of the backward passes since the previous row, and its Adam-state "
        "and update columns are NaN; a loop that steps only every few micro-batches should call Monitor.step() "
        "only after those steps",
    )


def grads_cleared(step: int) -> Note:
    return (
        "grads_cleared",
        f"step {step}: no optimizer step ran and .grad was set to None before Monitor.step() could read it "
        "(optimizer.zero_grad() after a step that a GradScaler skipped): the gradient columns are NaN for such "
        "steps; call Monitor.step() before zero_grad() to keep them",
    )


def no_loss(step: int) -> Note:
    return (
        "no_loss",
        f"step {step} had a backward but no loss reached the monitor (the model's forward "
        "returned no `.loss`, or infer_inputs=False): pass it, mon.step(loss=...); loss, "
        "loss_ratio and the spike columns are NaN without it",
    )


def batch_size_unknown(step: int, why: str) -> Note:
    return (
        "batch_size_unknown",
        f"step {step}: the sequences per micro-batch are "
        f"unknown ({why}): grad_trace_sigma and grad_noise_scale are NaN; pass "
        "Monitor.step(batch_size=...) (sequences per optimizer step, all ranks)",
    )


SCALER_ADOPTED = (
    "the optimizer steps through an enabled GradScaler that was not passed as "
    "grad_scaler=: its loss scale is divided out of the gradient statistics"
)
