"""Sequence Length Warmup schedules, numerically identical to DeepSpeed's CurriculumScheduler.

Step t (optimizer step, from 1) trains at seqlen(t). For fixed_linear / fixed_root:
    d = floor(((t / total_steps) ** (1 / root_degree)) * (max - min) + min)
    d = min(d - d % difficulty_step, max)
(so a start length that is not a multiple of difficulty_step starts *below* min, as in DeepSpeed).
For fixed_discrete: difficulty[i] for the first i with t <= max_step[i], else the last difficulty.
Once the maximum is reached it stays there. Pure functions: the trainer and the analysis share them.
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
            return
        if self.total_steps < 1 or self.difficulty_step < 1 or self.root_degree < 1:
            raise ValueError("total_steps, difficulty_step and root_degree must be >= 1")
        if not 1 <= self.min_seqlen <= self.max_seqlen:
            raise ValueError(f"need 1 <= min_seqlen ({self.min_seqlen}) <= max_seqlen ({self.max_seqlen})")
        if self.seqlen(1) < 1:
            raise ValueError(
                f"min_seqlen {self.min_seqlen} rounds down to 0 with difficulty_step {self.difficulty_step}"
            )

    def seqlen(self, step: int) -> int:
        """The sequence length at optimizer step `step` (1-based)."""
        if self.schedule_type == "fixed_discrete":
            for length, last in zip(self.difficulties, self.max_steps):
                if step <= last:
                    return int(length)
            return int(self.difficulties[-1])
        degree = 1 if self.schedule_type == "fixed_linear" else self.root_degree
        d = (float(step) / self.total_steps) ** (1.0 / degree)
        d = math.floor(d * (self.max_seqlen - self.min_seqlen) + self.min_seqlen)
        d -= d % self.difficulty_step
        return int(min(d, self.max_seqlen))

    def end_seqlen(self) -> int:
        return int(self.difficulties[-1]) if self.schedule_type == "fixed_discrete" else self.max_seqlen

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_deepspeed(cls, block: dict) -> SLWSchedule:
        """Build from DeepSpeed's `curriculum_learning` JSON block, taken as is."""
        if block.get("curriculum_type", "seqlen") != "seqlen":
            raise ValueError(f"only curriculum_type 'seqlen' is supported, got {block.get('curriculum_type')!r}")
        for key in ("min_difficulty", "max_difficulty", "schedule_type", "schedule_config"):
            if key not in block:
                raise ValueError(f"curriculum_learning block lacks {key!r}")
        cfg = block["schedule_config"]
        kind = block["schedule_type"]
        if kind == "fixed_discrete":
            return cls(kind, int(block["min_difficulty"]), int(block["max_difficulty"]),
                       difficulties=tuple(cfg["difficulty"]), max_steps=tuple(cfg["max_step"]))
        total = cfg.get("total_curriculum_step", cfg.get("total_step"))
        if total is None:
            raise ValueError("schedule_config needs total_curriculum_step (or total_step)")
        return cls(kind, int(block["min_difficulty"]), int(block["max_difficulty"]), int(total),
                   int(cfg.get("difficulty_step", 1)), int(cfg.get("root_degree", 2)))


def truncate(batch: torch.Tensor, seqlen: int) -> torch.Tensor:
    """Keep each sample's first `seqlen` tokens: (B, T) -> (B, seqlen). Positions follow from the slice."""
    return batch[:, :seqlen]
