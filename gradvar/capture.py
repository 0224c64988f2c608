"""Per-micro-batch gradient capture, on the device, with no host-device sync.

A tensor hook on each trainable parameter receives the gradient of one backward pass *before* it is
accumulated into `.grad` and, under DDP, before the all-reduce: h_k, the local micro-batch contribution.
With the usual loss scaling by 1/K (gradient accumulation), the micro-batch gradient is g_k = K_local * h_k.
We keep per parameter sum_k |h_k|^2 (a scalar) and, optionally, sum_k h_k^2 element-wise (one buffer the
size of the parameter), which is all the McCandlish estimators and the element-wise variance need.
"""
from __future__ import annotations

from functools import partial

import torch


class GradCapture:
    """Accumulates micro-batch gradient moments between optimizer steps."""

    def __init__(self, params: list[torch.Tensor], elementwise: bool = False):
        self.params = params
        self.elementwise = elementwise
        dev = params[0].device
        self.sq = [torch.zeros((), device=dev, dtype=torch.float32) for _ in params]
        self.m2 = [torch.zeros_like(p, dtype=torch.float32) for p in params] if elementwise else None
        self.fired = [0] * len(params)  # Python ints: counting backward passes needs no device value
        self.active = True
        self._handles = [p.register_hook(partial(self._on_grad, i)) for i, p in enumerate(params)]

    def _on_grad(self, i: int, grad: torch.Tensor):
        if not self.active:
            return None
        g = grad.detach().reshape(-1).float()
        self.sq[i].add_(torch.dot(g, g))
        if self.m2 is not None:
            self.m2[i].view(-1).addcmul_(g, g)
        self.fired[i] += 1
        return None

    @property
    def micro_batches(self) -> int:
        """Backward passes seen since the last reset (a parameter unused in some pass does not undercount)."""
        return max(self.fired) if self.fired else 0

    def reset(self) -> None:
        torch._foreach_zero_(self.sq)
        if self.m2 is not None and self.micro_batches:
            torch._foreach_zero_(self.m2)
        self.fired = [0] * len(self.params)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
