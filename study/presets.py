"""Study grids as plain functions. The CPU regime (tiny GPT-2, context 512, batch 8): LR 3e-2 trains best,
LR 1e-1 with a 5-step warmup spikes early, and a 20-step warmup is the control that may beat SLW. The quick
and cpu studies made the committed reports; lr-quick and lr-cpu are the LR-sensitivity redesign (final loss
across LRs per arm, as Wortsman et al. 2023 measure instability, with a token-matched control). Every run
of a grid ends at the same token budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.grid import Grid, RunSpec


@dataclass
class Study(Grid):
    """A grid whose runs the study report compares."""

    description: str = ""
    """One line on the model and the budget, for the report."""
    primary: dict = field(default_factory=dict)
    """The main comparison: {"baseline": group, "slw": group}; every group at that batch and LR joins it."""


HI = {"optim.lr": 0.1, "optim.min_lr": 0.01, "optim.warmup_steps": 5}
REF = {"optim.lr": 0.03, "optim.min_lr": 0.003, "optim.warmup_steps": 20}
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
    """The README's main job: < 10 min on 2 cores. Stable reference, unstable baseline, SLW, two seeds."""
    c = _common(100)
    t = 60  # SLW over 60% of the run
    runs = (
        _runs("ref-lr3e-2", {**c, **REF}, [0], method="baseline", lr=0.03, batch=8)
        + _runs("base-lr1e-1", {**c, **HI}, [0, 1], method="baseline", lr=0.1, batch=8)
        + _runs("slw8-T60-lr1e-1", {**c, **HI, **_slw(8, t)}, [0, 1], method="slw", lr=0.1, batch=8)
    )
    return Study(
        "quick",
        "tiny",
        runs,
        2,
        "tiny GPT-2 (1.9M), context 512, batch 8, 409,600 tokens per run",
        {"baseline": "base-lr1e-1", "slw": "slw8-T60-lr1e-1"},
    )


def lr_quick() -> Study:
    """The README's main job: the LR-sensitivity design in small. Baseline, SLW and the token-matched control
    at LR 0.03, 0.1 and 0.3 (10x), one seed, 60 baseline steps (245,760 tokens) each; 'paper' quantities
    (the probe loss included, no sequence-length probe)."""
    c = _common(60, quantities="paper")
    return Study(
        "lr-quick",
        "tiny",
        lr_grid(c, (0.03, 0.1, 0.3), ARMS[:3], [0], slw_steps=36),
        2,
        "tiny GPT-2 (1.9M), context 512, batch 8, 245,760 tokens per run; LR 0.03-0.3",
        {"baseline": "baseline-lr0.1", "slw": "slw-lr0.1"},
    )


def cpu() -> Study:
    """The full CPU study (< 90 min on 2 cores): 3 seeds per setting, SLW variants, controls, an LR sweep."""
    c, seeds = _common(150), [0, 1, 2]
    runs = (
        _runs("ref-lr3e-2", {**c, **REF}, seeds, method="baseline", lr=0.03, batch=8)
        + _runs("base-lr1e-1", {**c, **HI}, seeds, method="baseline", lr=0.1, batch=8)
        + _runs("slw8-T90-lr1e-1", {**c, **HI, **_slw(8, 90)}, seeds, method="slw", lr=0.1, batch=8)
        + _runs("slw64-T90-lr1e-1", {**c, **HI, **_slw(64, 90)}, seeds, method="slw", lr=0.1, batch=8)
        + _runs("slw8-T30-lr1e-1", {**c, **HI, **_slw(8, 30)}, seeds, method="slw", lr=0.1, batch=8)
        + _runs(
            "warmup20-lr1e-1",
            {**c, **HI, "optim.warmup_steps": 20},
            seeds,
            "control",
            method="baseline-warmup20",
            lr=0.1,
            batch=8,
        )
    )
    # beyond the paper, in the same unstable setting: spike interventions and variance-aware pacing
    runs += (
        _runs(
            "skipspike-lr1e-1",
            {**c, **HI, "intervention.skip_spikes": True},
            seeds,
            "beyond",
            method="skip-spikes",
            lr=0.1,
            batch=8,
        )
        + _runs(
            "rewind-lr1e-1",
            {**c, **HI, "intervention.rewind_on_spike": True},
            seeds,
            "beyond",
            method="rewind",
            lr=0.1,
            batch=8,
        )
        + _runs(
            "slwvar8-T90-lr1e-1",
            {**c, **HI, **_slw(8, 90), "slw.schedule": "variance"},
            seeds,
            "beyond",
            method="slw-variance",
            lr=0.1,
            batch=8,
        )
    )
    big = _common(150, batch=32)  # 4x batch, same token budget: 37 steps
    for lr in (0.03, 0.1, 0.3):  # the LR sweep at 4x batch; its unstable end is the second grid setting
        hi = {"optim.lr": lr, "optim.min_lr": lr / 10, "optim.warmup_steps": 5}
        runs += _runs(f"b32-base-lr{lr:g}", {**big, **hi}, seeds, "sweep", method="baseline", lr=lr, batch=32)
    hi3 = {"optim.lr": 0.3, "optim.min_lr": 0.03, "optim.warmup_steps": 5}
    runs += _runs("b32-slw8-T20-lr0.3", {**big, **hi3, **_slw(8, 20)}, seeds, method="slw", lr=0.3, batch=32)
    return Study(
        "cpu",
        "tiny",
        runs,
        2,
        "tiny GPT-2 (1.9M), context 512; batch 8 and 32; 614,400 tokens per run",
        {"baseline": "base-lr1e-1", "slw": "slw8-T90-lr1e-1"},
    )


def lr_cpu() -> Study:
    """The CPU study (< 90 min on 2 cores): LR 0.01 ... 1 (100x) x {baseline, SLW, token-matched control,
    20-step LR warmup} x seeds 0 and 1, paired across arms; 150 baseline steps (614,400 tokens) per run.

    The spike interventions and variance-aware pacing are left out of this comparison: in this regime the
    one spike comes at steps 3-10, where none of their rules can act (skip-step's z rule needs 8 earlier
    losses, rewind waits for the LR warmup to end and for a first checkpoint, the pacer's bound is learned
    over the first 10 steps), so their runs would repeat the baseline and SLW and only inflate n."""
    c = _common(150)
    return Study(
        "lr-cpu",
        "tiny",
        lr_grid(c, (0.01, 0.03, 0.1, 0.3, 1.0), ARMS, [0, 1], slw_steps=90),
        2,
        "tiny GPT-2 (1.9M), context 512, batch 8, 614,400 tokens per run; LR 0.01-1",
        {"baseline": "baseline-lr0.1", "slw": "slw-lr0.1"},
    )


def smoke() -> Study:
    """Seconds: two smoke-model runs (baseline and SLW) for the end-to-end test."""
    c = {
        "optim.train_tokens": 24 * 4 * 128,
        "monitor.quantities": "full",
        "monitor.probe_every": 8,
        "eval.every": 8,
        "checkpoint.every": 8,
        "optim.lr": 0.05,
        "optim.warmup_steps": 3,
    }
    runs = _runs("base", c, [0], method="baseline", lr=0.05, batch=4) + _runs(
        "slw", {**c, **_slw(16, 12)}, [0], method="slw", lr=0.05, batch=4
    )
    return Study(
        "smoke", "smoke", runs, 2, "smoke GPT-2 (2 layers, width 64), context 128", {"baseline": "base", "slw": "slw"}
    )


def smoke_lr() -> Study:
    """Under a minute: the LR-grid design on the smoke model for the report's end-to-end test. Baseline, SLW
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
    """GPT-2 117M on one H100/H200 in ~10 minutes: the paper's base LR against 10x LR, baseline and SLW
    (start 64, as the paper uses for GPT-3-style runs), batch 32 x 1024, 200 steps, bf16."""
    c = {
        "optim.batch_size": 32,
        "optim.micro_batch_size": 16,
        "optim.train_tokens": 200 * 32 * 1024,
        "optim.warmup_steps": 20,
        "monitor.quantities": "full",
        "monitor.probe_every": 50,
        "monitor.flush_every": 20,
        "eval.every": 20,
        "checkpoint.every": 0,
        "data.tokenizer": "bpe8k",
        "log_every": 20,
        "optim.fused": True,
    }
    base = {"optim.lr": 6e-4, "optim.min_lr": 6e-5}
    hi = {"optim.lr": 6e-3, "optim.min_lr": 6e-4}
    runs = (
        _runs("base-lr6e-4", {**c, **base}, [0], method="baseline", lr=6e-4, batch=32)
        + _runs("base-lr6e-3", {**c, **hi}, [0], method="baseline", lr=6e-3, batch=32)
        + _runs("slw64-T60-lr6e-3", {**c, **hi, **_slw(64, 60)}, [0], method="slw", lr=6e-3, batch=32)
    )
    return Study(
        "gpu-117m",
        "gpt2-117m",
        runs,
        1,
        "GPT-2 117M, context 1024, batch 32, bf16, one GPU",
        {"baseline": "base-lr6e-3", "slw": "slw64-T60-lr6e-3"},
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
    "lr-quick": lr_quick,
    "lr-cpu": lr_cpu,
    "quick": quick,
    "cpu": cpu,
    "smoke": smoke,
    "smoke-lr": smoke_lr,
    "gpu-117m": gpu_117m,
    "paper": paper,
}
