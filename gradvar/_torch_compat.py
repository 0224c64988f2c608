"""The private torch APIs gradvar relies on, in one place, checked once at import (the DTensor shard, only
imported under FSDP2, when the monitor meets a sharded model).

Public hooks do most of the work (tensor hooks, `register_step_pre_hook`, module forward hooks). What no
public API offers:
- the end of a backward pass (all of its gradients accumulated): the autograd engine's final callbacks;
- which backward task a gradient hook runs in (one backward call = one micro-batch, nested ones included),
  and which autograd node made a gradient;
- whether a backward accumulates into `.grad` at all (`torch.autograd.grad` does not);
- a GradScaler's scale as a device tensor (its public `get_scale()` waits for the device), whether it has
  unscaled the gradients already (its per-optimizer stage), and which scaler is stepping the optimizer (a
  look at the caller's frames);
- a DTensor's local shard as the same tensor object at every call (`_local_tensor`);
- multi-tensor kernels (`torch._foreach_*`): a handful of launches for all parameters instead of one each.
If a torch release drops one of them, importing gradvar says which, instead of failing inside a hook.
"""

from __future__ import annotations

import contextlib
import sys

import torch

MIN_TORCH = (2, 6)

_NEEDED = {
    "torch._C._current_graph_task_id": lambda: torch._C._current_graph_task_id,
    "torch._C._current_autograd_node": lambda: torch._C._current_autograd_node,
    "torch._C._will_engine_execute_node": lambda: torch._C._will_engine_execute_node,
    "torch.autograd.Variable._execution_engine.queue_callback": lambda: (
        torch.autograd.Variable._execution_engine.queue_callback
    ),
    "torch.amp.GradScaler._get_scale_async": lambda: torch.amp.GradScaler._get_scale_async,
    "torch.amp.GradScaler._per_optimizer_states": lambda: _sets(torch.amp.GradScaler, "_per_optimizer_states"),
    "torch.amp.grad_scaler.OptState.UNSCALED/STEPPED": lambda: (
        torch.amp.grad_scaler.OptState.UNSCALED,
        torch.amp.grad_scaler.OptState.STEPPED,
    ),
    **{
        f"torch._foreach_{op}": (lambda op=op: getattr(torch, f"_foreach_{op}"))
        for op in ("norm", "max", "mul", "mul_", "pow", "addcmul_", "copy_", "sub", "add_", "div_")
    },
}


def _sets(cls, attr: str) -> None:
    """AttributeError unless `cls.__init__` sets `self.<attr>` (an instance attribute; no instance made)."""
    if attr not in cls.__init__.__code__.co_names:
        raise AttributeError(attr)


def check_dtensor() -> None:
    """Under FSDP2, once: gradvar.sharded.local reads a DTensor's shard through `_local_tensor`."""
    from torch.distributed.tensor import DTensor

    if "_local_tensor" not in getattr(DTensor, "__slots__", ()):
        raise ImportError(
            "gradvar needs torch.distributed.tensor.DTensor._local_tensor under FSDP2; this is torch "
            f"{torch.__version__}"
        )


def _check() -> None:
    version = tuple(int(x) for x in torch.__version__.split(".")[:2] if x.isdigit())
    missing = []
    for name, get in _NEEDED.items():
        try:
            get()
        except AttributeError:
            missing.append(name)
    if version < MIN_TORCH or missing:
        raise ImportError(
            f"gradvar needs torch >= {'.'.join(map(str, MIN_TORCH))} with "
            f"{', '.join(missing) or 'its private autograd and foreach APIs'}; this is torch "
            f"{torch.__version__}"
        )


_check()

foreach_norm = torch._foreach_norm
foreach_max = torch._foreach_max
foreach_mul = torch._foreach_mul
foreach_mul_ = torch._foreach_mul_
foreach_pow = torch._foreach_pow
foreach_addcmul_ = torch._foreach_addcmul_
foreach_copy_ = torch._foreach_copy_
foreach_sub = torch._foreach_sub
foreach_add_ = torch._foreach_add_
foreach_div_ = torch._foreach_div_


def graph_task_id() -> int:
    """The backward task the calling gradient hook runs in (-1 outside one)."""
    return torch._C._current_graph_task_id()


def current_node():
    """The autograd node the engine is running (inside a gradient hook: the one that made the gradient)."""
    return torch._C._current_autograd_node()


def at_backward_end(fn) -> None:
    """Run fn() once the current backward task has accumulated every gradient (after DDP's own callback
    when queued from inside a final callback: callbacks run in the order they were queued)."""
    torch.autograd.Variable._execution_engine.queue_callback(fn)


def accumulates(node) -> bool:
    """False inside torch.autograd.grad, which accumulates nothing into .grad (and says so by refusing to
    tell whether it will run a parameter's accumulator)."""
    try:
        torch._C._will_engine_execute_node(node)
        return True
    except RuntimeError:
        return False


def scaler_scale(scaler) -> torch.Tensor:
    """The loss scale of the backward passes just run, on the device, without a sync."""
    return scaler._get_scale_async()


def scaler_unscaled(scaler, optimizer) -> bool:
    """True once `scaler.unscale_(optimizer)` ran this iteration (`.grad` then holds true gradients)."""
    state = scaler._per_optimizer_states.get(id(optimizer), {})
    stage = state.get("stage")
    return getattr(stage, "name", None) in ("UNSCALED", "STEPPED")


def calling_scaler(depth: int = 8):
    """The enabled GradScaler whose `step` called the optimizer step running now (None: not called from one).
    Looked up from the optimizer's step pre-hook, whose callers within `depth` frames include the scaler's."""
    frame, code = sys._getframe(2), torch.amp.GradScaler.step.__code__
    for _ in range(depth):
        if frame is None:
            return None
        if frame.f_code is code:
            scaler = frame.f_locals.get("self")
            return scaler if isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled() else None
        frame = frame.f_back
    return None


HOST_READS_FREE = True
"""On a CPU device a value read on the host waits for nothing (there is no queue of kernels to drain), so a few
statistics take a cheaper path there (`host_reads_free`): the non-finite count reads only the parameters whose
norm says they have a non-finite element, and the L1 norm of Adam's state is a sum per tensor (torch's CPU
`_foreach_norm` of order 1 or 0 is five times slower than a sum or an order-2 norm). Both paths give the same
numbers; benchmarks/param_traffic.py counts what an accelerator runs (`accelerator_path`)."""


@contextlib.contextmanager
def accelerator_path():
    """Within: the CPU takes the accelerator's path too (HOST_READS_FREE off), for tools that count or watch what
    an accelerator runs."""
    global HOST_READS_FREE
    was, HOST_READS_FREE = HOST_READS_FREE, False
    try:
        yield
    finally:
        HOST_READS_FREE = was


def host_reads_free(t: torch.Tensor) -> bool:
    """True where reading `t` on the host syncs nothing: a CPU tensor (see HOST_READS_FREE)."""
    return HOST_READS_FREE and t.device.type == "cpu"


def sum_nonneg(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    """The sum of each tensor of non-negative values (its L1 norm), accumulated in at least float32: one
    multi-tensor kernel on an accelerator, a sum per tensor on the CPU (see HOST_READS_FREE)."""
    if not ts or not host_reads_free(ts[0]):
        return foreach_norm(ts, 1)
    return [t.sum(dtype=torch.promote_types(t.dtype, torch.float32)) for t in ts]
