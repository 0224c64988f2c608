"""Shared pieces of the benchmarks: a bare reference loop with the same model, optimizer, batch and length."""
from __future__ import annotations

import resource
import time

import torch
import torch.nn.functional as F


def bare_step(model, opt, batch, micro: int, clip: float):
    """The reference: no framework, just HF GPT-2 + AdamW with accumulation and clipping."""
    chunks = batch.split(micro)
    for mb in chunks:
        logits = model(input_ids=mb[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), mb[:, 1:].reshape(-1))
        (loss / len(chunks)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    opt.zero_grad(set_to_none=True)


def timed(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
