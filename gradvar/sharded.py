"""FSDP2 (`torch.distributed.fsdp.fully_shard`) support: the monitor's view of sharded parameters.

Under FSDP2 a module's registered parameters are DTensor shards (dim-0 slices, one per rank), and so are
their gradients after the backward's reduce-scatter and the optimizer state built from them. During the
forward and the backward FSDP2 swaps in the unsharded parameters (plain tensors, all-gathered): the autograd
leaves the per-rank micro-batch gradients flow into *before* the reduce-scatter. Those objects persist across
steps (FSDP2 re-allocates their storage in place), so the capture hooks them once.

Every statistic of a shard is then a shard-local reduction (sum, max, min) that the flush combines across
ranks; nothing is gathered. Values identical on every rank under DDP become per-rank partial values here:
`reduce_op` says how each combines.
"""

from __future__ import annotations

import contextlib

import torch


def _fsdp_module_type():
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return None
    return FSDPModule


def fsdp_modules(module: torch.nn.Module) -> list:
    """The FSDP2-sharded modules of `module` (the root first), empty when it is not sharded with fully_shard."""
    kind = _fsdp_module_type()
    return [] if kind is None else [m for m in module.modules() if isinstance(m, kind)]


def is_sharded(module: torch.nn.Module) -> bool:
    if not fsdp_modules(module):
        return False
    from ._torch_compat import check_dtensor

    check_dtensor()  # `local` reads the shards through a private attribute
    return True


@contextlib.contextmanager
def unsharded_params(module: torch.nn.Module, params: list[torch.Tensor]):
    """Yield the unsharded parameter of each of `params` (same order), with their storage present.

    Collective: every rank must enter (FSDP2 all-gathers each shard group once). FSDP2 registers the
    unsharded parameters on the modules while unsharded, so `named_parameters` lists them in the same order
    as the sharded ones it lists otherwise."""
    mods = fsdp_modules(module)
    for m in mods:
        m.unshard()
    try:
        ids = {id(p) for p in params}
        sharded = [p for p in module.parameters() if p.requires_grad]
        if len(sharded) != len(params) or any(id(p) in ids for p in sharded):
            raise RuntimeError(
                "gradvar: under FSDP2 every trainable parameter must belong to a fully_shard'ed "
                "module: shard the root module too (fully_shard(model) after its blocks)"
            )
        yield sharded
    finally:
        for m in mods:
            m.reshard()


def local(t):
    """This rank's shard of a DTensor (the same tensor object at every call, so that `.grad` identity and
    version checks work on it, and in-place ops reach the DTensor), else `t` itself."""
    inner = getattr(t, "_local_tensor", None)
    return inner if inner is not None else t


def replicated(t):
    """A DTensor reduced to its full value on every rank (a norm from torch's clip_grad_norm_), else `t`."""
    full = getattr(t, "full_tensor", None)
    return full() if full is not None else t


def nonempty(tensors: list[torch.Tensor], fill: float) -> list[torch.Tensor]:
    """A rank's shard of a small parameter can be empty (fewer rows than ranks); max/min kernels refuse empty
    tensors, so those become one element that cannot win (fill = -inf for a max, inf for a min)."""
    return [t if t.numel() else torch.full((1,), fill, device=t.device, dtype=t.dtype) for t in tensors]


def global_sq_sum(local_sq: torch.Tensor) -> torch.Tensor:
    """The sum over all shards of a shard-local sum of squares: one all-reduce of one scalar (clipping needs
    the global norm before it scales any gradient; torch's clip_grad_norm_ on DTensors makes the same one)."""
    import torch.distributed as dist

    total = local_sq.detach().clone()
    dist.all_reduce(total)
    return total


def notes(quantities, not_run: list[str], step: int) -> list[tuple[str, str]]:
    """(reason, message) for each column that stays empty under FSDP2 and why; `not_run`: the names of the
    quantities that need whole parameters (gradvar.quantities.shard_local)."""
    out = []
    if any(q.needs_elementwise for q in quantities):
        out.append(
            (
                "fsdp_elementwise",
                f"step {step}: grad_var_max is NaN under FSDP2: the element-wise variance "
                "needs every rank's micro-batch gradients element by element, and each rank holds only its own "
                "(unsharded) and a shard of their mean; gathering them would cost a parameter-sized collective. "
                "grad_var_sum, grad_trace_sigma and grad_true_sq are exact",
            )
        )
    for name in not_run:
        out.append(
            (
                f"fsdp_{name}",
                f"step {step}: the {name} quantity does not run under FSDP2: it needs whole parameters or "
                "gradients, and each rank holds a shard of them (a gradient it took would pass through FSDP's "
                "reduce-scatter into .grad); what it writes stays empty",
            )
        )
    return out
