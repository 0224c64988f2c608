"""Shared pieces of the benchmarks: a bare reference loop with the same model, optimizer, batch and length."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch

from trainer.train import next_token_loss


def autocast(device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (as the trainer does), nothing on CPU."""
    dev = torch.device(device)
    return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bare_step(model, opt, batch, micro: int, clip: float, loss_fn=next_token_loss):
    """The reference: no framework, just HF GPT-2 + AdamW with accumulation and clipping (`loss_fn` the
    trainer's compiled loss when the trainer compiles)."""
    dev = next(model.parameters()).device
    chunks = batch.to(dev, non_blocking=True).split(micro)  # from pinned memory: the host does not wait
    for mb in chunks:
        with autocast(dev):  # the same loss code and precision as the trainer
            loss = loss_fn(model, mb)
        (loss / len(chunks)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    opt.zero_grad(set_to_none=True)


def adamw(cfg, model) -> torch.optim.AdamW:
    """The trainer's optimizer settings (the GPU presets use the fused kernel)."""
    o = cfg.optim
    kw = {"fused": True} if o.fused else {}
    return torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, **kw)


def timed(fn, n: int, device="cpu") -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return time.perf_counter() - t


def print_times(totals: dict, n: int) -> None:
    """One line per loop: its mean step time over n steps."""
    for m, total in totals.items():
        print(f"  {m:<6} {1000 * total / n:8.1f} ms/step")


def host() -> str:
    """The machine the figures come from, for the line that heads them: the CPU's model name and count (overheads
    measured on one host need not hold on another; our 2-core machines are not all the same CPU)."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def interleaved(
    arms: dict,
    n: int,
    warmup: int,
    device="cpu",
    before=None,
    order: str = "alternate",
    cpu: dict | None = None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Seconds of each of n steps of every arm, one step of each arm in turn: a drift of the machine (its clock,
    other processes, the allocator's state) falls on every arm alike, where blocks of steps per arm would hand
    it to whichever arm ran then. `order`: "alternate" reverses the order every other turn (A B C, C B A, ...);
    "shuffled" draws it afresh every turn (seeded: the same on every rank), so that no arm always follows the
    same ones (with "alternate" the first and last arms follow themselves at every other turn's boundary, and
    what a step leaves in the caches and the allocator falls on its successor). `warmup` untimed steps per arm
    first; `before()` runs before each timed step (a barrier across ranks). `cpu`: filled with each step's CPU
    seconds of this process, {arm: [(user, system), ...]} (all its threads: a sink's writer thread counts).
    `seed`: the shuffled orders' (another seed, another draw: a replication)."""
    if order not in ("alternate", "shuffled"):
        raise ValueError(f"interleaved: order {order!r} is neither 'alternate' nor 'shuffled'")
    for fn in arms.values():
        for _ in range(warmup):
            fn()
    names, times = list(arms), {a: [] for a in arms}
    rng = random.Random(seed)
    for i in range(n):
        if order == "shuffled":
            rng.shuffle(names)
        for a in names if order == "shuffled" or i % 2 == 0 else names[::-1]:
            if before is not None:
                before()
            r0 = resource.getrusage(resource.RUSAGE_SELF) if cpu is not None else None
            times[a].append(timed(arms[a], 1, device))
            if r0 is not None:
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                cpu.setdefault(a, []).append((r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime))
    return times


def overhead(arm: list[float], ref: list[float], extra: float = 0.0, goal: float | None = None, seed: int = 0):
    """The relative overhead of `arm` over `ref` (sum(arm) + extra) / sum(ref) - 1, with a 95% bootstrap interval
    over the turns (turn i's step of each loop resampled together, so that a slow moment of the machine stays
    paired), and what it says of `goal`: "met" when the interval lies below it, "not met" above, else "not
    shown" (the noise is larger than the distance to the goal). `extra`: seconds added outside the resampled
    steps (the probe steps of "full", measured once per process). Returns (estimate, low, high, verdict)."""
    a, r = np.asarray(arm), np.asarray(ref)
    est = (a.sum() + extra) / r.sum() - 1
    idx = np.random.default_rng(seed).integers(0, len(a), (2000, len(a)))
    boot = (a[idx].sum(axis=1) + extra) / r[idx].sum(axis=1) - 1
    lo, hi = np.percentile(boot, [2.5, 97.5])
    verdict = None if goal is None else ("met" if hi <= goal else "not met" if lo > goal else "not shown")
    return est, lo, hi, verdict


def describe_overhead(est: float, lo: float, hi: float, verdict: str | None = None, goal: float | None = None) -> str:
    """'+1.2% (95%: -0.3% to +2.6%)', with the goal and the verdict when given."""
    text = f"{est:+.1%} (95%: {lo:+.1%} to {hi:+.1%})"
    return text if goal is None else f"{text}, goal +{goal:.0%}: {verdict}"


def peak_memory_mb(device="cpu") -> float:
    """Peak GPU memory allocated on CUDA, peak resident set size on CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_json(path, record: dict) -> None:
    """Append one result as a JSON line (the GPU checks collect every number in one file); no-op without a path."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
