"""Study presets as plain functions. `cpu` and `gpu-117m` put the paper's stability-efficiency dilemma on the
batch axis: at a fixed token budget a larger batch takes fewer serial steps only if it can take a larger LR. The
arms: the baseline (5-step LR warmup), a longer LR warmup (the positive control: a known stabiliser), SLW, and
its token-matched control (full-length sequences at SLW's tokens per step), which tells sequence length apart
from tokens per step. Seeds are paired (seed s gives every arm the same initialisation and data order), every
run of a study ends at the same token budget, and every run has K >= 2 micro-batches, so the gradient-noise
columns (tr(Σ), |G|², B_simple, the element-wise variance) are recorded."""

from __future__ import annotations

from dataclasses import dataclass

from .grid import Grid, RunSpec


@dataclass
class Study(Grid):
    """A grid whose runs the study report compares."""

    description: str = ""
    """One line on the model and the budget, for the report."""


def _slw(start: int, total: int, step: int = 8) -> dict:
    return {"slw.enabled": True, "slw.min_seqlen": start, "slw.total_steps": total, "slw.difficulty_step": step}


def _runs(group: str, base: dict, seeds, role="grid", **labels) -> list[RunSpec]:
    return [RunSpec(f"{group}-s{s}", {**base, "seed": s}, group, role, labels) for s in seeds]


CPU_TOKENS = 819_200
"""Every run of the CPU study: 200 x 8 x 512 = 50 x 32 x 512 tokens, 0.35 epoch of the corpus (no data reused)."""
CPU_SEEDS = (0, 1)
CPU_PROBE_AT = [2, 4, 6, 8, 10, 15, 20]
"""Early steps at which the large-batch baseline runs the equal-token sequence-length probe."""


def _batch_run(
    method: str, lr: float, batch: int, micro: int, seeds, role="grid", warmup=5, tokens=CPU_TOKENS, **extra
) -> list:
    """One arm at one batch size and peak LR (cosine to LR / 10), every run `tokens` long."""
    over = {
        "optim.train_tokens": tokens,
        "optim.batch_size": batch,
        "optim.micro_batch_size": micro,
        "optim.lr": lr,
        "optim.min_lr": lr / 10,
        "optim.warmup_steps": warmup,
        "monitor.quantities": "paper",
        "monitor.probe_loss_every": 1,
        "monitor.probe_every": 1000,
        "eval.every": 10,
        "checkpoint.every": 25,
        "log_every": 10,
        **extra,
    }
    group = f"{method}-b{batch}-lr{lr:g}"
    return _runs(group, over, seeds, role, method=method, lr=lr, batch=batch)


def cpu() -> Study:
    """The CPU study on the batch axis, where the paper's dilemma lives: a 4x batch takes 4x fewer serial steps
    at a fixed token budget only if it can take a larger LR. Every run is 819,200 tokens; seeds 0 and 1 are
    paired (same initialisation and data order in every arm).

    - reference: batch 8 x 512 (2 micro-batches), 200 steps, the baseline at LR 0.03;
    - large batch 32 x 512 (4 micro-batches), 50 baseline steps: the baseline (5-step LR warmup) at LR 0.03,
      0.06, 0.12; a 12-step LR warmup (the positive control: a known stabiliser) at 0.06, 0.12, 0.24; SLW
      64 -> 512 over 30 steps at 0.06, 0.12; its token-matched batch warmup at 0.06, 0.12.

    22 runs. The large-batch baseline also runs the equal-token sequence-length probe at early steps. LR 1 and
    the causal branches are left out: the first measures how divergence grows, the second (branches from one
    mid-spike checkpoint, clipped outcomes) could not show a length effect at this scale.

    The spike interventions and variance-aware pacing are left out too: the spike comes in the first 10-20
    steps, where none of their rules can act (skip-step's z rule needs 8 earlier losses, rewind waits for the
    LR warmup to end and for a first checkpoint, the pacer learns its bound over the first 10 steps)."""
    runs = _batch_run("baseline", 0.03, 8, 4, CPU_SEEDS, role="reference")
    for lr in (0.03, 0.06, 0.12):
        probe = {"monitor.quantities": "full", "monitor.probe_at": CPU_PROBE_AT}
        runs += _batch_run("baseline", lr, 32, 8, CPU_SEEDS, **probe)
    for lr in (0.06, 0.12, 0.24):
        runs += _batch_run("warmup12", lr, 32, 8, CPU_SEEDS, warmup=12)
    for lr in (0.06, 0.12):
        runs += _batch_run("slw", lr, 32, 8, CPU_SEEDS, **_slw(64, 30, 64))
        runs += _batch_run("batch-warmup", lr, 32, 8, CPU_SEEDS, **_slw(64, 30, 64), **{"slw.control": "batch"})
    return Study(
        "cpu",
        "tiny",
        runs,
        2,
        "tiny GPT-2 (1.9M), context 512, 819,200 tokens per run; batch 8 (reference) and 32; peak LR 0.03-0.24",
    )


def quick() -> Study:
    """The README's main job, a demonstration and not a verdict (under 7 min on 2 cores with the install): one
    seed of the baseline, SLW (128 -> 512 over 24 steps), its token-matched control and a 20-step LR warmup at
    peak LR 0.1, batch 8 x 512 in 2 micro-batches (so the gradient-noise columns are recorded), 40 steps each.
    SLW starts at 128, not 64: a 4-sequence micro-batch of the control holds whole sequences only at
    multiples of 128."""
    tokens, runs = 40 * 8 * 512, []
    runs += _batch_run("baseline", 0.1, 8, 4, [0], tokens=tokens)
    runs += _batch_run("slw", 0.1, 8, 4, [0], tokens=tokens, **_slw(128, 24, 128))
    runs += _batch_run("batch-warmup", 0.1, 8, 4, [0], tokens=tokens, **_slw(128, 24, 128), **{"slw.control": "batch"})
    runs += _batch_run("warmup20", 0.1, 8, 4, [0], tokens=tokens, warmup=20)
    desc = "tiny GPT-2 (1.9M), context 512, batch 8 (2 micro-batches), 163,840 tokens per run; peak LR 0.1; one seed"
    return Study("quick", "tiny", runs, 2, desc)


def smoke() -> Study:
    """The batch-axis design on the smoke model, for the end-to-end test (about a minute on 2 cores): the
    reference at batch 4 (2 micro-batches, LR 0.01, one seed), and at batch 8 (2 micro-batches, 8 steps of
    8 x 128 tokens) the baseline at LR 0.01 and 0.3 (with the length probe at steps 2 and 4), the 6-step LR
    warmup, SLW (64 -> 128 over 4 steps) and its token-matched control at 0.3; seeds 0 and 1. A run's start-up
    dominates its seconds, so the grid has as few cells as the design allows."""
    tokens, seeds = 8 * 8 * 128, (0, 1)
    common = {"tokens": tokens, "warmup": 2, "eval.every": 4, "checkpoint.every": 0, "log_every": 4}
    probe = {"monitor.quantities": "full", "monitor.probe_at": [2, 4]}
    runs = _batch_run("baseline", 0.01, 4, 2, [0], role="reference", **common)
    runs += _batch_run("baseline", 0.01, 8, 4, seeds, **common, **probe)
    runs += _batch_run("baseline", 0.3, 8, 4, seeds, **common, **probe)
    runs += _batch_run("warmup6", 0.3, 8, 4, seeds, **{**common, "warmup": 6})
    runs += _batch_run("slw", 0.3, 8, 4, seeds, **common, **_slw(64, 4, 64))
    runs += _batch_run("batch-warmup", 0.3, 8, 4, seeds, **common, **_slw(64, 4, 64), **{"slw.control": "batch"})
    return Study("smoke", "smoke", runs, 2, "smoke GPT-2 (2 layers, width 64), context 128, 8,192 tokens per run")


GPU_LR = 2.4e-3
"""The large LR of gpt-117m: 4 x the paper's baseline LR 6e-4. The 4x is the abstract's ("8x larger batch size
and 4x larger learning rate" for GPT-2); the 6e-4 base is GPT-2 small's usual LR, which the abstract does not
state (trainer/recipes.py)."""


def gpu_117m() -> Study:
    """GPT-2 117M on one H100/H200, about 6.5 minutes: batch 16 x 1024 in 2 micro-batches (K = 2, so the noise
    columns are recorded), 100 steps (1,638,400 tokens, under one epoch of the embedded corpus in GPT-2
    tokens), bf16, no compile (its warm-up would outlast a run). At peak LR 2.4e-3: the baseline (5-step LR
    warmup, with the length probe at early steps), SLW 128 -> 1024 over 30 steps, its token-matched control
    and a 30-step LR warmup, seeds 0, 1, 2; plus the baseline at 6e-4 (seed 0) as the reference. SLW starts
    at 128, not 64: an 8-sequence micro-batch of the control holds whole 1024-token sequences only at
    multiples of 128."""
    tokens, seeds = 100 * 16 * 1024, (0, 1, 2)
    common = {
        "tokens": tokens,
        "monitor.flush_every": 20,
        "checkpoint.every": 0,
        "eval.every": 20,
        "optim.fused": True,
        "model.compile": "off",
    }
    probe = {"monitor.quantities": "full", "monitor.probe_at": [2, 4, 6, 8, 10, 15, 20]}
    runs = _batch_run("baseline", 6e-4, 16, 8, [0], role="reference", **common)
    runs += _batch_run("baseline", GPU_LR, 16, 8, seeds, **common, **probe)
    runs += _batch_run("slw", GPU_LR, 16, 8, seeds, **common, **_slw(128, 30, 128))
    ctrl = {**_slw(128, 30, 128), "slw.control": "batch"}
    runs += _batch_run("batch-warmup", GPU_LR, 16, 8, seeds, **common, **ctrl)
    runs += _batch_run("warmup30", GPU_LR, 16, 8, seeds, **{**common, "warmup": 30})
    return Study(
        "gpu-117m",
        "gpt2-117m",
        runs,
        1,
        "GPT-2 117M, context 1024, batch 16 (2 micro-batches), bf16, one GPU, 1,638,400 tokens per run; "
        "peak LR 2.4e-3 (reference 6e-4)",
    )


def paper() -> Study:
    """The paper's settings (documented and runnable on many GPUs; not run here): GPT-2 117M baseline at
    batch 512 / LR 6e-4 vs baseline and SLW at 8x batch (4096) and 4x LR (2.4e-3), 157B tokens."""
    c = {"monitor.quantities": "paper"}
    big = {**c, "optim.batch_size": 4096, "optim.lr": 2.4e-3, "optim.min_lr": 2.4e-4}
    runs = (
        _runs("gpt2-117m-base-b512", c, [0], method="baseline", lr=6e-4, batch=512)
        + _runs("gpt2-117m-base-b4096", big, [0], method="baseline", lr=2.4e-3, batch=4096)
        + _runs("gpt2-117m-slw-b4096", {**big, **_slw(8, 45_000)}, [0], method="slw", lr=2.4e-3, batch=4096)
    )
    return Study(
        "paper",
        "gpt2-117m",
        runs,
        1,
        "the paper's GPT-2 117M setting (multi-GPU: launch each run with torchrun)",
    )


STUDIES = {
    "quick": quick,
    "cpu": cpu,
    "smoke": smoke,
    "gpu-117m": gpu_117m,
    "paper": paper,
}
