"""Max output logit and max attention logit (small-scale instability signals, Wortsman et al. 2023).

The output logit is read by a forward hook on the model's output embedding during the training forwards of the
steps its schedule names (one read of the B x T x V logits per micro-batch, more than the rest of a step's
statistics together on a small model: `full` reads them every LOGIT_EVERY steps after the first 30).
The attention logit max(q.k / sqrt(d)) is not materialised by SDPA, so it is recomputed from the q/k
projections of GPT-2 style blocks (`attn.c_attn`), on the probe batch only: O(T^2) work every P steps.
"""

from __future__ import annotations

import contextlib

import torch

from ..hooks import WeakHook
from .base import MAX, Quantity, Stat


class OutputLogit(Quantity):
    name = "output_logit"
    writes = columns = frozenset({"max_output_logit"})
    reads_state = False

    def __init__(self, schedule=None):
        super().__init__(schedule)
        self._max = None
        self._handle = None
        self._step_now = None

    def attach(self, module, step_now=None) -> bool:
        """step_now(): the number of the step under way (the monitor's); the forwards of the steps the schedule
        skips are not read. None: every forward is."""
        head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
        if head is None:
            return False
        self._step_now = step_now
        self._handle = head.register_forward_hook(WeakHook(self, "_hook"))
        return True

    def _hook(self, mod, inputs, out):
        if not (mod.training and torch.is_grad_enabled()):
            return
        if self._step_now is not None and not self.schedule(self._step_now()):
            return
        m = abs_max(out.detach())
        self._max = m if self._max is None else torch.maximum(self._max, m)

    def on_step(self, ctx):
        if self._max is None:
            return {}
        value, self._max = self._max, None
        return {"max_output_logit": Stat(value, MAX)}

    def finalize(self, raw, meta, groups):
        return ({"max_output_logit": raw["max_output_logit"][:, 0]} if "max_output_logit" in raw else {}), {}

    def detach(self):
        if self._handle is not None:
            self._handle.remove()


def abs_max(x: torch.Tensor) -> torch.Tensor:
    """max |x| as a float32 scalar, from one read of x: aminmax reads it once and writes two scalars, where
    x.abs().amax() writes a copy of x first (the logits are B x T x V: five times slower on CPU)."""
    lo, hi = torch.aminmax(x)
    return torch.maximum(-lo, hi).float()


class _Box:
    value = None


@contextlib.contextmanager
def attention_logit_max(model):
    """Collect max |q.k|/sqrt(head_dim) over the causal part of every GPT-2 attention block."""
    box, handles = _Box(), []
    n_head = getattr(getattr(model, "config", None), "n_head", None)
    for name, mod in model.named_modules():
        if n_head and name.endswith("attn.c_attn"):
            handles.append(mod.register_forward_hook(_make_hook(box, n_head)))
    try:
        yield box
    finally:
        for h in handles:
            h.remove()


def _make_hook(box, n_head):
    def hook(mod, inputs, out):
        b, t, three_d = out.shape
        d = three_d // 3
        q, k, _ = out.detach().float().split(d, dim=-1)
        q = q.view(b, t, n_head, d // n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(b, t, n_head, d // n_head).transpose(1, 2)  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) / (d // n_head) ** 0.5  # (B, nh, T, T)
        mask = torch.ones(t, t, dtype=torch.bool, device=att.device).tril()
        m = abs_max(att.masked_fill(~mask, 0))
        box.value = m if box.value is None else torch.maximum(box.value, m)

    return hook
