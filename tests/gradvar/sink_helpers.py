"""A short real run through the monitor's sinks."""

from __future__ import annotations

import torch
from gv_helpers import tiny_gpt2

import gradvar

STEPS, K = 8, 2
LOSS_SPIKE_STEP = 6  # the step whose losses are passed 10x too high: a spike event


def train(run_dir, sinks=(), steps: int = STEPS, flush_every: int = 3, spike: bool = True):
    """Tiny GPT-2, K=2 micro-batches, the 'full' preset with a probe every 2 steps. Returns the monitor."""
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    probe = torch.randint(0, 64, (4, 17), generator=g)
    mon = gradvar.Monitor(
        model,
        opt,
        run_dir,
        "full",
        probe_batch=probe,
        probe_every=2,
        probe_micro_batch=2,
        probe_seqlens=[9, 17],
        flush_every=flush_every,
        sinks=sinks,
    )
    for step in range(1, steps + 1):
        losses = []
        for _ in range(K):
            x = torch.randint(0, 64, (2, 16), generator=g)
            loss = model(input_ids=x, labels=x).loss
            (loss / K).backward()
            losses.append(loss.detach() * (10 if spike and step == LOSS_SPIKE_STEP else 1))
        mon.clip_grad_norm_(1.0)
        opt.step()
        mon.step(loss=losses)
        opt.zero_grad()
        if step == 2:
            mon.log_event("checkpoint", "saved step-2")
    mon.close()
    return mon
