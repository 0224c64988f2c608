"""Sequence Length Warmup schedules, numerically identical to DeepSpeed 0.19's CurriculumScheduler.

Step t (optimizer step, from 1) trains at seqlen(t). For fixed_linear / fixed_root (degree 1 for linear):
    d = floor(((t / total_steps) ** (1 / root_degree)) * (max - min) + min)
    d = d - d % difficulty_step                       # a multiple of the step (Tensor Core shapes)
    d = max(d, ceil(min / difficulty_step) * difficulty_step)   # never below the first multiple >= min
    d = min(d, max)
(min 12, step 8 starts at 16; min 8, step 16 starts at 16.) For fixed_discrete: difficulty[i] for the first i
with t <= max_step[i], else the last difficulty. DeepSpeed's scheduler is stateful: once a length reaches
max_difficulty it stays there, and a start at or above max_difficulty never moves; `seqlen` reproduces that
without state. Pure functions: the trainer and the analysis share them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the schedules are pure Python: importing them (analysis, the CLI) needs no torch
    import torch

SCHEDULE_TYPES = ("fixed_linear", "fixed_root", "fixed_discrete")


@dataclass(frozen=True)
class SLWSchedule:
    """One sequence-length schedule; `seqlen(step)` is the length trained at that step."""

    schedule_type: str = "fixed_linear"
    """fixed_linear, fixed_root or fixed_discrete (DeepSpeed's names)."""
    min_seqlen: int = 8
    """Start length (DeepSpeed min_difficulty)."""
    max_seqlen: int = 512
    """Full length (DeepSpeed max_difficulty)."""
    total_steps: int = 1000
    """Steps to go from min to max (DeepSpeed total_curriculum_step), the paper's T."""
    difficulty_step: int = 8
    """Every length is a multiple of this (DeepSpeed difficulty_step)."""
    root_degree: int = 2
    """Degree of the root for fixed_root."""
    difficulties: tuple[int, ...] = field(default_factory=tuple)
    """fixed_discrete: the lengths, one more than max_steps."""
    max_steps: tuple[int, ...] = field(default_factory=tuple)
    """fixed_discrete: the last step of each length but the final one."""

    def __post_init__(self):
        if self.schedule_type not in SCHEDULE_TYPES:
            raise ValueError(f"schedule_type must be one of {SCHEDULE_TYPES}, got {self.schedule_type!r}")
        if self.schedule_type == "fixed_discrete":
            if len(self.difficulties) != len(self.max_steps) + 1 or not self.max_steps:
                raise ValueError("fixed_discrete needs len(difficulties) == len(max_steps) + 1 >= 2")
            if min(self.difficulties) < 1:
                raise ValueError(f"fixed_discrete lengths must be >= 1, got {list(self.difficulties)}")
            return
        if self.total_steps < 1 or self.difficulty_step < 1 or self.root_degree < 1:
            raise ValueError("total_steps, difficulty_step and root_degree must be >= 1")
        if not 1 <= self.min_seqlen <= self.max_seqlen:
            raise ValueError(f"need 1 <= min_seqlen ({self.min_seqlen}) <= max_seqlen ({self.max_seqlen})")

    def seqlen(self, step: int) -> int:
        """The sequence length at optimizer step `step` (1-based)."""
        if self.min_seqlen >= self.max_seqlen:  # DeepSpeed updates only while below max_difficulty
            return int(self.min_seqlen)
        if self.schedule_type == "fixed_discrete":
            frozen = self._discrete_freeze_step()
            return self._discrete(step if frozen is None else min(step, frozen))
        degree = 1 if self.schedule_type == "fixed_linear" else self.root_degree
        d = (float(step) / self.total_steps) ** (1.0 / degree)
        d = math.floor(d * (self.max_seqlen - self.min_seqlen) + self.min_seqlen)
        d -= d % self.difficulty_step
        d = max(d, -(-self.min_seqlen // self.difficulty_step) * self.difficulty_step)
        return int(min(d, self.max_seqlen))

    def _discrete(self, step: int) -> int:
        if step > self.max_steps[-1]:
            return int(self.difficulties[-1])
        return int(next(d for d, last in zip(self.difficulties, self.max_steps) if step <= last))

    def _discrete_freeze_step(self) -> int | None:
        """The first step whose length reaches max_seqlen (DeepSpeed keeps it from then on), or None.
        The discrete length changes only after a max_step boundary, so those steps are the candidates."""
        for step in sorted({1, *(m + 1 for m in self.max_steps if m >= 1)}):
            if self._discrete(step) >= self.max_seqlen:
                return step
        return None

    def end_seqlen(self) -> int:
        return int(self.difficulties[-1]) if self.schedule_type == "fixed_discrete" else self.max_seqlen

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_deepspeed(cls, block: dict) -> SLWSchedule:
        """Build from a DeepSpeed seqlen curriculum block (min/max_difficulty, schedule_type, schedule_config),
        requiring the keys DeepSpeed's CurriculumScheduler requires."""
        if block.get("curriculum_type", "seqlen") != "seqlen":
            raise ValueError(f"only curriculum_type 'seqlen' is supported, got {block.get('curriculum_type')!r}")
        for key in ("min_difficulty", "max_difficulty", "schedule_type", "schedule_config"):
            if key not in block:
                raise ValueError(f"curriculum_learning block lacks {key!r}")
        cfg, kind = block["schedule_config"], block["schedule_type"]
        lo, hi = int(block["min_difficulty"]), int(block["max_difficulty"])
        need = {
            "fixed_discrete": ("difficulty", "max_step"),
            "fixed_linear": ("total_curriculum_step", "difficulty_step"),
            "fixed_root": ("total_curriculum_step", "difficulty_step", "root_degree"),
        }.get(kind, ())
        for key in need:
            if key not in cfg:
                raise ValueError(f"schedule_config of a {kind} schedule lacks {key!r}")
        if kind == "fixed_discrete":
            return cls(
                kind,
                lo,
                hi,
                difficulties=tuple(int(d) for d in cfg["difficulty"]),
                max_steps=tuple(int(m) for m in cfg["max_step"]),
            )
        return cls(
            kind, lo, hi, int(cfg["total_curriculum_step"]), int(cfg["difficulty_step"]), int(cfg.get("root_degree", 2))
        )


SEQLEN_METRICS = ("seqlen", "seqlen_truncate")


def deepspeed_curriculum(config: dict) -> dict:
    """The seqlen curriculum of a whole DeepSpeed config, as one block for `SLWSchedule.from_deepspeed`
    (with its `enabled` switch). Accepts DeepSpeed 0.19's `data_efficiency.data_sampling.curriculum_learning`
    (its one seqlen metric under `curriculum_metrics`; each level's `enabled` defaults to false as in
    DeepSpeed) and the top-level `curriculum_learning` block that DeepSpeed 0.19 removed."""
    legacy = config.get("curriculum_learning")
    eff = config.get("data_efficiency")
    sampling = eff.get("data_sampling") if isinstance(eff, dict) else None
    current = sampling.get("curriculum_learning") if isinstance(sampling, dict) else None
    if legacy is not None and current is not None:
        raise ValueError(
            "both curriculum_learning and data_efficiency.data_sampling.curriculum_learning are "
            "set: keep one (DeepSpeed 0.19 reads only the latter)"
        )
    if legacy is not None:
        if not isinstance(legacy, dict):
            raise ValueError("curriculum_learning must be a JSON object (DeepSpeed's block)")
        return legacy
    if not isinstance(current, dict):
        raise ValueError(
            "no curriculum_learning block: expected data_efficiency.data_sampling.curriculum_learning "
            "(DeepSpeed 0.19) or a top-level curriculum_learning (older DeepSpeed)"
        )
    enabled = all(isinstance(d, dict) and bool(d.get("enabled", False)) for d in (eff, sampling, current))
    metrics = current.get("curriculum_metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError("data_efficiency.data_sampling.curriculum_learning lacks 'curriculum_metrics'")
    if set(metrics) - set(SEQLEN_METRICS) or len(metrics) != 1:
        raise ValueError(
            f"curriculum_metrics must hold one sequence-length metric ({' or '.join(SEQLEN_METRICS)}; "
            f"this trainer truncates each sample), got {sorted(metrics)}"
        )
    block = next(iter(metrics.values()))
    if not isinstance(block, dict):
        raise ValueError("the curriculum metric must be a JSON object")
    return {**block, "curriculum_type": "seqlen", "enabled": enabled}


def token_matched_batch(batch_size: int, seqlen: int, full_seqlen: int) -> int:
    """Full-length sequences per step that carry SLW's tokens per step (batch_size x seqlen): the batch of
    the token-matched control (batch-size warmup), which separates sequence length from tokens per step.
    ValueError when that is not a whole number of sequences (exact or not at all)."""
    rows, rest = divmod(batch_size * seqlen, full_seqlen)
    if rest or rows < 1:
        raise ValueError(
            f"{batch_size} x {seqlen} tokens are not a whole number of {full_seqlen}-token sequences; pick SLW "
            f"lengths that are multiples of {full_seqlen // math.gcd(batch_size, full_seqlen)}"
        )
    return rows


def schedule_lengths(sched: SLWSchedule) -> list[int]:
    """Every length the schedule trains at, in order of first use (it stays at the last one)."""
    if sched.schedule_type == "fixed_discrete":
        horizon = max(sched.max_steps) + 1
    else:
        horizon = sched.total_steps + 1
    return list(dict.fromkeys(sched.seqlen(t) for t in range(1, max(horizon, 1) + 1)))


def truncate(batch: torch.Tensor, seqlen: int) -> torch.Tensor:
    """Keep each sample's first `seqlen` tokens: (B, T) -> (B, seqlen). Positions follow from the slice."""
    return batch[:, :seqlen]
