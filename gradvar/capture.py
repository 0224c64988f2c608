"""Per-micro-batch gradient capture, on the device, with no host-device sync.

One multi-gradient hook over all trainable parameters fires once per backward pass with every
parameter's gradient of that pass *before* it is accumulated into `.grad` and, under DDP, before the
all-reduce: h_k, the local micro-batch contribution. With the usual loss scaling by 1/K (gradient
accumulation), the micro-batch gradient is g_k = K_local * h_k. Per parameter we keep sum_k |h_k|^2 and,
optionally, sum_k h_k^2 element-wise (one buffer the size of the parameters): all that the McCandlish
estimators and the element-wise variance need. Everything is done with multi-tensor (foreach) kernels,
a handful of launches per micro-batch whatever the number of parameters.
"""
from __future__ import annotations

import torch
from torch.autograd.graph import register_multi_grad_hook


class GradCapture:
    """Accumulates micro-batch gradient moments between optimizer steps."""

    def __init__(self, params: list[torch.Tensor], elementwise: bool = False):
        self.params = params
        self.elementwise = elementwise
        dev = params[0].device
        self.sq = torch.zeros(len(params), device=dev, dtype=torch.float32)
        """(n_params,): sum over this step's micro-batches of |h_k|^2 per parameter."""
        self.m2 = [torch.zeros_like(p, dtype=torch.float32) for p in params] if elementwise else None
        self._all = torch.arange(len(params), device=dev)
        self.micro_batches = 0  # a Python int: counting backward passes needs no device value
        self._handle = None
        self.active = True

    @property
    def active(self) -> bool:
        return self._handle is not None

    @active.setter
    def active(self, on: bool) -> None:
        # Unhook while paused, not just ignore: the multi-grad hook cannot coexist with torch.autograd.grad
        # (the probes use it) and a paused monitor should cost nothing.
        if on and self._handle is None:
            self._handle = register_multi_grad_hook(self.params, self._on_grads, mode="all")
        elif not on and self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_grads(self, grads) -> None:
        have = [i for i, g in enumerate(grads) if g is not None]
        if not have:
            return
        gs = [grads[i].detach() for i in have]
        gs = [g if g.dtype == torch.float32 else g.float() for g in gs]
        norms = torch.stack(torch._foreach_norm(gs))
        index = self._all if len(have) == len(grads) else torch.tensor(have, device=self._all.device)
        self.sq.index_add_(0, index, norms.square())
        if self.m2 is not None:
            torch._foreach_addcmul_([self.m2[i] for i in have], gs, gs)
        self.micro_batches += 1

    def reset(self) -> None:
        self.sq.zero_()
        if self.m2 is not None and self.micro_batches:
            torch._foreach_zero_(self.m2)
        self.micro_batches = 0

    def remove(self) -> None:
        self.active = False
