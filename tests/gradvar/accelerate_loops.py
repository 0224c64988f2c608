"""Hugging Face accelerate's documented accumulation loop with gradvar, and the records it must write, computed
by hand from each micro-batch's own gradient (also run on 2 ranks, under `accelerate launch`).

In the loop `optimizer.step()` runs on every micro-batch and steps only when `accelerator.sync_gradients`;
Monitor.step() follows it each time. Before each micro-batch's forward its gradient g_k comes from its own
torch.autograd.grad call on the unwrapped model (capture paused; the parameters do not change within an
accumulation), with its loss and shape. From every rank's g_k of a step, in float64 (`expected`):
G = mean_k g_k, clipped as torch does (c / (|G| + 1e-6), at most 1); AdamW's moments m, v updated with the
clipped G; the McCandlish estimators, the element-wise variance and the loss as in client_loops.reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gv_helpers import every_step, tiny_gpt2

import gradvar

ACCUM, B_S, T, STEPS, CLIP, LR = 4, 2, 16, 3, 0.05, 1e-3
BETAS = (0.9, 0.999)


def schedule(n: int) -> float:
    """LambdaLR factor after n scheduler steps: the LR changes at every step, so a wrong step's LR shows."""
    return 1.0 / (1.0 + n)


def run(run_dir, world: int = 1, pass_loss: bool = True) -> dict:
    """The loop; returns this rank's micro-batches per optimizer step: g_k (float64), loss_k, shape."""
    from accelerate import Accelerator

    accelerator = Accelerator(gradient_accumulation_steps=ACCUM, cpu=True)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 64, (world * ACCUM * B_S * STEPS, T), generator=g)
    loader = torch.utils.data.DataLoader(data, batch_size=B_S)
    model = tiny_gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    mon = gradvar.Monitor(model, optimizer, run_dir, every_step(), notify=lambda *a: None)  # grad_var_max each step
    plain = accelerator.unwrap_model(model)
    params = [p for p in plain.parameters() if p.requires_grad]
    steps, current = [], []
    for x in loader:
        with mon.paused():
            loss = plain(input_ids=x, labels=x).loss
            grads = torch.autograd.grad(loss, params)
        current.append((torch.cat([g.reshape(-1) for g in grads]).double(), loss.item(), tuple(x.shape)))
        with accelerator.accumulate(model):
            loss = model(input_ids=x, labels=x).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            mon.step(loss=loss) if pass_loss else mon.step()
            if accelerator.sync_gradients:
                steps.append(current)
                current = []
    mon.close()
    return {"steps": steps, "rank": accelerator.process_index}


def expected(ranks: list[dict], world: int) -> list[dict]:
    """Every paper column of every step from the micro-batch gradients of all ranks (rank order)."""
    m = v = 0.0
    rows, tokens = [], 0
    for i in range(len(ranks[0]["steps"])):
        per_rank = [np.stack([mb[0].numpy() for mb in r["steps"][i]]) for r in ranks]  # (A, n_params) each
        g = np.concatenate(per_rank)  # (K, n_params)
        losses = [mb[1] for r in ranks for mb in r["steps"][i]]
        b_s, seqlen = ranks[0]["steps"][i][0][2]
        k = len(g)
        big = g.mean(0)
        gb, gs = float(big @ big), float(np.square(g).sum(1).mean())
        norm = math.sqrt(gb)
        clipped = big * min(1.0, CLIP / (norm + 1e-6))
        m = BETAS[0] * m + (1 - BETAS[0]) * clipped
        v = BETAS[1] * v + (1 - BETAS[1]) * np.square(clipped)
        true_sq, trace = (k * gb - gs) / (k - 1), b_s * k * (gs - gb) / (k - 1)
        tokens += k * b_s * seqlen
        rows.append(
            {
                "grad_norm": norm,
                "grad_norm_clipped": float(np.linalg.norm(clipped)),
                "grad_true_sq": true_sq,
                "grad_trace_sigma": trace,
                "grad_noise_scale": trace / true_sq,
                "grad_var_sum": gs - gb,
                # each rank's second moment about the global mean, the maximum over ranks (exact in one process)
                "grad_var_max": max(float((np.square(r).mean(0) - np.square(big)).max()) for r in per_rank),
                "adam_vhat_max": float(v.max()) / (1 - BETAS[1] ** (i + 1)),
                "adam_vhat_l1": float(v.sum()) / (1 - BETAS[1] ** (i + 1)),
                "loss": float(np.mean(losses)),
                "loss_max": float(np.max(losses)),
                "adam_v_max": float(v.max()),
                "adam_v_l1": float(v.sum()),
                "adam_v_min": float(v.min()),
                "adam_m_norm": float(np.linalg.norm(m)),
                # accelerate steps a prepared scheduler once per process at each optimizer step
                "lr": LR * schedule(world * i),
                "micro_batches": k,
                "batch_size": k * b_s,
                "seqlen": seqlen,
                "tokens": tokens,
                "nonfinite_grad": 0,
                "_scale": {
                    "grad_true_sq": gs,
                    "grad_trace_sigma": b_s * k * gs,
                    "grad_var_sum": gs,
                    "grad_var_max": max(float(np.square(r).mean(0).max()) for r in per_rank),
                    "grad_noise_scale": abs(trace / true_sq) * (gs / abs(true_sq) + gs / (gs - gb)),
                },
            }
        )
    return rows


def mismatches(steps, rows: list[dict], rtol: float = 2e-4) -> list:
    """(step, column, recorded, expected) wherever the records differ from the hand computation; a difference
    of terms is compared on the scale of its terms."""
    bad = []
    if steps.step.tolist() != list(range(1, len(rows) + 1)):
        return [("steps", steps.step.tolist())]
    for i, want in enumerate(rows):
        for col, value in want.items():
            if col.startswith("_"):
                continue
            got = float(steps[col].iloc[i])
            scale = want["_scale"].get(col, abs(value))  # a ratio of differences: their relative errors add up
            if not abs(got - value) <= rtol * scale:
                bad.append((i + 1, col, got, value))
    return bad
