"""Study grids as plain functions. The CPU regime (tiny GPT-2, context 512, batch 8): LR 3e-2 is the stable
reference, LR 1e-1 with a 5-step warmup spikes early, and a 20-step warmup is the control that may beat SLW.
Every run of a grid ends at the same token budget."""

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


def _slw(start: int, total: int) -> dict:
    return {"slw.enabled": True, "slw.min_seqlen": start, "slw.total_steps": total, "slw.difficulty_step": 8}


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


STUDIES = {"quick": quick, "cpu": cpu, "smoke": smoke, "gpu-117m": gpu_117m, "paper": paper}
