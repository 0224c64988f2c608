"""Per-micro-batch gradient capture, on the device, with no host-device sync.

One multi-gradient hook over all trainable parameters fires once per backward pass with every
parameter's gradient of that pass *before* it is accumulated into `.grad` and, under DDP, before the
all-reduce: h_k, the local micro-batch contribution. With the usual loss scaling by 1/K (gradient
accumulation), the micro-batch gradient is g_k = K_local * h_k. Per parameter we keep sum_k |h_k|^2 and,
optionally, sum_k h_k^2 element-wise: all that the McCandlish estimators and the element-wise variance
need. Everything is done with multi-tensor (foreach) kernels, a handful of launches per micro-batch
whatever the number of parameters.

The element-wise moment is lazy in a single process: the first pass's gradients are only held, and the
moment is formed when a second pass arrives. A step of one micro-batch (where the variance across
micro-batches is undefined) then costs no parameter-sized work at all. Under DDP a rank with one
micro-batch still contributes to the variance across ranks, so every pass is accumulated at once.
"""
from __future__ import annotations

import torch
from torch.autograd.graph import register_multi_grad_hook


class GradCapture:
    """Accumulates micro-batch gradient moments between optimizer steps."""

    def __init__(self, params: list[torch.Tensor], elementwise: bool = False, lazy: bool = True):
        self.params = params
        self.elementwise, self.lazy = elementwise, lazy
        dev = params[0].device
        self.sq = torch.zeros(len(params), device=dev, dtype=torch.float32)
        """(n_params,): sum over this step's micro-batches of |h_k|^2 per parameter."""
        self._m2: list[torch.Tensor] | None = None
        self._held: tuple[list[int], list[torch.Tensor]] | None = None
        self._all = torch.arange(len(params), device=dev)
        self._index_cache: dict[tuple, torch.Tensor] = {}
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

    def _index(self, have: list[int]) -> torch.Tensor:
        """Device index of the parameters that got a gradient, built once per pattern: a tensor made from
        host data is a host-to-device copy, which synchronises on CUDA."""
        if len(have) == len(self.params):
            return self._all
        key = tuple(have)
        if key not in self._index_cache:
            self._index_cache[key] = torch.tensor(have, device=self._all.device)
        return self._index_cache[key]

    def _on_grads(self, grads) -> None:
        have = [i for i, g in enumerate(grads) if g is not None]
        if not have:
            return
        gs = [grads[i].detach() for i in have]
        gs = [g if g.dtype == torch.float32 else g.float() for g in gs]
        norms = torch.stack(torch._foreach_norm(gs))
        self.sq.index_add_(0, self._index(have), norms.square())
        if self.elementwise:
            if self.lazy and self.micro_batches == 0:
                self._held = (have, gs)
            else:
                self._take_held()
                self._accumulate(have, gs)
        self.micro_batches += 1

    def _accumulate(self, have: list[int], gs: list[torch.Tensor]) -> None:
        if self._m2 is None:  # the step's first contribution: write h^2, no zeroing pass
            squares = torch._foreach_mul(gs, gs)
            if len(have) == len(self.params):
                self._m2 = squares
            else:
                self._m2 = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
                for i, s in zip(have, squares):
                    self._m2[i] = s
        else:
            torch._foreach_addcmul_([self._m2[i] for i in have], gs, gs)

    def _take_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._accumulate(*held)

    def second_moment(self) -> list[torch.Tensor] | None:
        """sum_k h_k^2 per parameter, float32; None when not kept or when one micro-batch is all there is in
        a single process. The caller owns it until `reset` (GradVariance transforms it in place)."""
        if not self.elementwise or (self.lazy and self.micro_batches < 2):
            return None
        self._take_held()
        return self._m2

    def reset(self) -> None:
        self.sq.zero_()
        self._m2, self._held = None, None
        self.micro_batches = 0

    def remove(self) -> None:
        self.active = False
