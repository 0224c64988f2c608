"""Variance-aware sequence-length pacing: a new SLW schedule.

The length follows DeepSpeed's fixed_linear curve, but its progress counter advances only while Adam's
variance-state maximum stays in bounds: s_t = log(adam_v_max_t) - log(median of the last `window` values).
During the first `calib_steps` the length grows as usual and the largest s seen sets the bound
(bound = max s + margin). After that: s <= bound advances, bound < s <= bound + margin holds, and larger
values step the progress back by `back_steps`. Reading adam_v_max costs one scalar per step (a host sync
on GPU), the price of a decision made every step.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from gradvar.slw import SLWSchedule


def decide(s: float, bound: float, margin: float) -> str:
    """'advance', 'hold' or 'back' for signal s against the learned bound (pure; tested on its own)."""
    if not math.isfinite(s) or s > bound + margin:
        return "back"
    return "hold" if s > bound else "advance"


@dataclass
class VariancePacer:
    schedule: SLWSchedule
    calib_steps: int = 10
    window: int = 10
    margin: float = math.log(1.5)
    back_steps: int = 2
    progress: float = 0.0
    bound: float = math.nan
    history: deque = field(default_factory=deque)
    calib: list = field(default_factory=list)
    last_action: str = "advance"

    def seqlen(self, step: int) -> int:
        return self.schedule.seqlen(max(1, int(self.progress) + 1))

    def observe(self, v_max: float) -> str:
        """Feed this step's adam_v_max; returns the action taken for the next step."""
        logv = math.log(v_max) if v_max > 0 and math.isfinite(v_max) else math.inf
        s = (
            logv - float(np.median(self.history))
            if self.history and math.isfinite(logv)
            else (0.0 if math.isfinite(logv) else math.inf)
        )
        if math.isfinite(logv):
            self.history.append(logv)
            while len(self.history) > self.window:
                self.history.popleft()
        if len(self.calib) < self.calib_steps:
            self.calib.append(s)
            self.progress += 1
            if len(self.calib) == self.calib_steps:
                finite = [c for c in self.calib if math.isfinite(c)]
                self.bound = max(finite) + self.margin if finite else self.margin
            self.last_action = "advance"
            return self.last_action
        self.last_action = decide(s, self.bound, self.margin)
        if self.last_action == "advance":
            self.progress += 1
        elif self.last_action == "back":
            self.progress = max(0.0, self.progress - self.back_steps)
        return self.last_action

    def state_dict(self) -> dict:
        return {
            "progress": self.progress,
            "bound": self.bound,
            "history": list(self.history),
            "calib": list(self.calib),
        }

    def load_state_dict(self, st: dict) -> None:
        self.progress, self.bound = float(st["progress"]), float(st["bound"])
        self.history, self.calib = deque(st["history"]), list(st["calib"])


def adam_v_max(optimizer) -> float:
    from gradvar import _torch_compat as tc
    from gradvar.sharded import local, nonempty

    vs = [local(s["exp_avg_sq"]) for s in optimizer.state.values() if "exp_avg_sq" in s]
    if not vs:
        return math.nan
    top = torch.stack(tc.foreach_max(nonempty(vs, -math.inf))).max()
    if any(hasattr(s["exp_avg_sq"], "to_local") for s in optimizer.state.values() if "exp_avg_sq" in s):
        import torch.distributed as dist

        dist.all_reduce(top, op=dist.ReduceOp.MAX)  # FSDP2: max over the shards
    return float(top)  # sync: the pacing decision
