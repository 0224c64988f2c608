"""Study grids as plain functions. Each is an LR-sensitivity grid (the final loss across peak LRs per arm, as
Wortsman et al. 2023 measure instability): arms paired by seed, a token-matched control that tells sequence
length apart from tokens per step, and, in `cpu`, a longer LR warmup and the causal 2 x 2 branches. In the
CPU regime (tiny GPT-2, context 512, batch 8) a 5-step warmup to LR >= 0.1 spikes at steps 3-10. Every run
of a grid ends at the same token budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from .grid import Grid, RunSpec


@dataclass
class Study(Grid):
    """A grid whose runs the study report compares."""

    description: str = ""
    """One line on the model and the budget, for the report."""
    primary: dict = field(default_factory=dict)
    """The main comparison: {"baseline": group, "slw": group}; every group at that batch and LR joins it."""
    branches: dict = field(default_factory=dict)
    """The causal 2 x 2 branches: {"from": group, "steps": [...], "short": length, "steps_each": n}; empty for
    none (study/branches.py)."""


ARMS = ("baseline", "slw", "batch-warmup", "warmup20")
"""The LR-sensitivity arms: the baseline (5-step LR warmup); SLW; its token-matched control (full-length
sequences, SLW's tokens per step at every step), which tells sequence length apart from tokens per step; and
a 20-step LR warmup, the plain stabiliser SLW has to beat."""


def _slw(start: int, total: int, step: int = 8) -> dict:
    return {"slw.enabled": True, "slw.min_seqlen": start, "slw.total_steps": total, "slw.difficulty_step": step}


def _runs(group: str, base: dict, seeds, role="grid", **labels) -> list[RunSpec]:
    return [RunSpec(f"{group}-s{s}", {**base, "seed": s}, group, role, labels) for s in seeds]


def _common(budget_steps: int, quantities: str = "full", batch: int = 8) -> dict:
    return {
        "optim.train_tokens": budget_steps * 8 * 512,
        "optim.batch_size": batch,
        "optim.micro_batch_size": 8,
        "monitor.quantities": quantities,
        "monitor.probe_every": 25,
        "eval.every": 10,
        "checkpoint.every": 25,
        "log_every": 10,
    }


def arm(name: str, lr: float, slw_steps: int) -> dict:
    """One arm at peak LR `lr` (cosine to lr / 10). SLW goes 64 -> 512 in steps of 64: at batch 8 that is a
    whole number of full-length sequences per step (1 ... 8), so the control matches it exactly; a start at 8
    (the paper's) would carry 64 tokens, less than one full sequence."""
    base = {"optim.lr": lr, "optim.min_lr": lr / 10, "optim.warmup_steps": 5}
    slw = {**base, **_slw(64, slw_steps, 64)}
    return {
        "baseline": base,
        "slw": slw,
        "batch-warmup": {**slw, "slw.control": "batch"},
        "warmup20": {**base, "optim.warmup_steps": 20},
    }[name]


def lr_grid(common: dict, lrs, arms, seeds, slw_steps: int, batch: int = 8) -> list[RunSpec]:
    """Every arm at every LR; seed s gives every arm the same initialisation and data order (paired)."""
    return [
        spec
        for lr in lrs
        for a in arms
        for spec in _runs(f"{a}-lr{lr:g}", {**common, **arm(a, lr, slw_steps)}, seeds, method=a, lr=lr, batch=batch)
    ]


def quick() -> Study:
    """The README's main job, a demonstration and not a verdict (under 7 min on 2 cores with the install): one
    seed of the baseline, SLW (128 -> 512), its token-matched control and a 20-step LR warmup at peak LR 0.1,
    batch 8 x 512 in 2 micro-batches (so the gradient-noise columns are recorded), 40 baseline steps each."""
    c = {**_common(40, quantities="paper"), "optim.micro_batch_size": 4, "monitor.probe_loss_every": 1}
    runs = lr_grid(c, (0.1,), ARMS, [0], slw_steps=24)
    for spec in runs:  # a 4-sequence micro-batch of the control holds whole sequences at multiples of 128
        if spec.overrides.get("slw.enabled"):
            spec.overrides.update({"slw.min_seqlen": 128, "slw.difficulty_step": 128})
    return Study(
        "quick",
        "tiny",
        runs,
        2,
        "tiny GPT-2 (1.9M), context 512, batch 8 (2 micro-batches), 163,840 tokens per run; peak LR 0.1; one seed",
        {"baseline": "baseline-lr0.1", "slw": "slw-lr0.1"},
    )


CPU_TOKENS = 819_200
"""Every run of the CPU study: 200 x 8 x 512 = 50 x 32 x 512 tokens, 0.35 epoch of the corpus (no data reused)."""
CPU_SEEDS = (0, 1)
CPU_PROBE_AT = [2, 4, 6, 8, 10, 15, 20]
"""Early steps at which the large-batch baseline runs the equal-token sequence-length probe."""


def _batch_run(method: str, lr: float, batch: int, micro: int, seeds, role="grid", warmup=5, **extra) -> list:
    """One arm at one batch size and peak LR (cosine to LR / 10), every run CPU_TOKENS long."""
    over = {
        "optim.train_tokens": CPU_TOKENS,
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
        {"baseline": "baseline-b32-lr0.12", "slw": "slw-b32-lr0.12"},
    )


def smoke() -> Study:
    """Seconds: two smoke-model runs (baseline and SLW) and the 2 x 2 branches of the baseline at step 4, for the
    end-to-end test."""
    c = {
        "optim.train_tokens": 24 * 4 * 128,
        "monitor.quantities": "full",
        "monitor.probe_every": 8,
        "eval.every": 8,
        "checkpoint.every": 8,
        "optim.lr": 0.05,
        "optim.warmup_steps": 3,
    }
    runs = _runs("base", {**c, "checkpoint.steps": [4]}, [0], method="baseline", lr=0.05, batch=4) + _runs(
        "slw", {**c, **_slw(16, 12)}, [0], method="slw", lr=0.05, batch=4
    )
    return Study(
        "smoke",
        "smoke",
        runs,
        2,
        "smoke GPT-2 (2 layers, width 64), context 128",
        {"baseline": "base", "slw": "slw"},
        branches={"from": "base", "steps": [4], "short": 64, "steps_each": 3},
    )


def smoke_lr() -> Study:
    """The LR-grid design on the smoke model for the report's end-to-end test (2-3 min on 2 cores). Baseline, SLW
    (64 -> 128 over 10 steps) and the token-matched control at LR 0.01 and 0.3 (30x), seeds 0 and 1, 16
    steps of 4 x 128 tokens, 'paper' quantities; a 3-step LR warmup, so the early window (steps <= 9, where
    the probe loss is taken every step) lies inside the run. A run's start-up dominates its seconds, so
    the grid has as few cells as the design allows."""
    c = {
        "optim.train_tokens": 16 * 4 * 128,
        "monitor.quantities": "paper",
        "eval.every": 8,
        "checkpoint.every": 0,
    }
    runs = lr_grid(c, (0.01, 0.3), ARMS[:3], [0, 1], slw_steps=10, batch=4)
    for spec in runs:
        spec.overrides["optim.warmup_steps"] = 3  # the arms' 5 steps would leave too short a run after them
    return Study(
        "smoke-lr",
        "smoke",
        runs,
        2,
        "smoke GPT-2 (2 layers, width 64), context 128, batch 4, 8,192 tokens per run; LR 0.01-0.3",
        {"baseline": "baseline-lr0.3", "slw": "slw-lr0.3"},
    )


def gpu_117m() -> Study:
    """GPT-2 117M on one H100/H200 in about 8 minutes, the CPU study's design: peak LR 6e-4 ... 2e-2 (33x) x
    {baseline, SLW, token-matched control}, one seed, batch 16 x 1024, 100 baseline steps (1.6M tokens, under
    one epoch of the embedded corpus in GPT-2 tokens), bf16, no compile (its warm-up would outlast a run)."""
    c = {
        **_common(100, quantities="paper", batch=16),
        "optim.train_tokens": 100 * 16 * 1024,
        "optim.micro_batch_size": 16,
        "monitor.flush_every": 20,
        "checkpoint.every": 0,
        "eval.every": 20,
        "optim.fused": True,
        "model.compile": "off",
    }
    runs = lr_grid(c, (6e-4, 2e-3, 6e-3, 2e-2), ARMS[:3], [0], slw_steps=60, batch=16)
    return Study(
        "gpu-117m",
        "gpt2-117m",
        runs,
        1,
        "GPT-2 117M, context 1024, batch 16, bf16, one GPU, 1.6M tokens per run; peak LR 6e-4-2e-2",
        {"baseline": "baseline-lr0.006", "slw": "slw-lr0.006"},
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
        {"baseline": "gpt2-117m-base-b4096", "slw": "gpt2-117m-slw-b4096"},
    )


STUDIES = {
    "quick": quick,
    "cpu": cpu,
    "smoke": smoke,
    "smoke-lr": smoke_lr,
    "gpu-117m": gpu_117m,
    "paper": paper,
}
