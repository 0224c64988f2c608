"""Reference for the client-loop tests: every steps column from the micro-batch gradients themselves.

Each micro-batch's gradient g_k comes from its own torch.autograd.grad call on its mean loss (nothing of it
touches .grad, the optimizer or the monitor: the capture is paused). From them, in float64:
G = mean_k g_k; grad_norm = |G|; grad_norm_clipped = |G| min(1, c / (|G| + 1e-6)) (torch's rule);
|G_s|^2 = mean_k |g_k|^2; grad_true_sq = (K |G|^2 - |G_s|^2) / (K - 1);
grad_trace_sigma = B_s K (|G_s|^2 - |G|^2) / (K - 1); loss = mean_k loss_k.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from gv_helpers import tiny_gpt2


class NanoGPTStyle(torch.nn.Module):
    """A model with nanoGPT's interface: forward(idx, targets) -> (logits, loss)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.gpt = tiny_gpt2(seed)

    def forward(self, idx, targets=None):
        logits = self.gpt(input_ids=idx).logits  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


class DictInput(torch.nn.Module):
    """A model that takes its batch as one dict argument: forward({"ids": ..., "labels": ...})."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.gpt = tiny_gpt2(seed)

    def forward(self, batch):
        return self.gpt(input_ids=batch["ids"], labels=batch["labels"])


def batches(n_steps: int, b: int = 8, t: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, (b, t + 1), generator=g) for _ in range(n_steps)]


def hf_reference(model, chunks, clip: float = math.inf) -> dict:
    """`reference` for a Hugging Face causal LM trained on `chunks` (its micro-batches, labels = inputs)."""
    return reference(model, [lambda c=c: model(input_ids=c, labels=c).loss for c in chunks], clip)


def reference(model, micro_losses, clip: float = math.inf) -> dict:
    """The steps columns of one step from its micro-batch losses (callables of no argument, each returning
    one micro-batch's mean loss as the loop's forward computes it)."""
    params = [p for p in model.parameters() if p.requires_grad]
    gs, losses = [], []
    for f in micro_losses:
        loss = f()
        grads = torch.autograd.grad(loss, params)
        gs.append(torch.cat([g.reshape(-1) for g in grads]).double())
        losses.append(loss.item())
    g = torch.stack(gs)  # (K, n_params)
    k = len(gs)
    big = g.mean(0)
    norm = big.norm().item()
    gb, gs_mean = norm**2, g.square().sum(1).mean().item()
    out = {
        "grad_norm": norm,
        "grad_norm_clipped": norm * min(1.0, clip / (norm + 1e-6)),
        "micro_batches": k,
        "loss": float(np.mean(losses)),
        "_gs": gs_mean,
    }
    if k >= 2:
        out["grad_true_sq"] = (k * gb - gs_mean) / (k - 1)
        out["_trace_per_b_s"] = k * (gs_mean - gb) / (k - 1)
    return out


def check(steps, refs: list[dict], b_s: int, seqlen: int | None, rtol: float = 2e-4) -> None:
    """Every reference column against the records, step by step; tr(Sigma) scaled by the sequences per
    micro-batch; batch_size, seqlen and cumulative tokens from the batch shapes."""
    assert steps.step.tolist() == list(range(1, len(refs) + 1))
    tokens = 0
    for i, ref in enumerate(refs):
        row = steps.iloc[i]
        k = ref["micro_batches"]
        for col, want in ref.items():
            if col.startswith("_"):
                continue
            scale = ref["_gs"] if col == "grad_true_sq" else abs(want)  # a difference of terms of size |G_s|^2
            assert abs(row[col] - want) <= rtol * scale + 1e-9, (i, col, row[col], want)
        if "_trace_per_b_s" in ref:
            want = b_s * ref["_trace_per_b_s"]
            assert abs(row.grad_trace_sigma - want) <= rtol * b_s * k * ref["_gs"], (i, row.grad_trace_sigma, want)
        assert row.batch_size == k * b_s, (i, row.batch_size)
        if seqlen is not None:
            tokens += k * b_s * seqlen
            assert row.seqlen == seqlen and row.tokens == tokens, (i, row.seqlen, row.tokens)


def notes(run_dir) -> list[str]:
    import gradvar

    ev = gradvar.read_records(run_dir, ["events"])["events"]
    return ev[ev.kind == "note"].message.tolist() if len(ev) else []
