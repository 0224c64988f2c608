"""A known cause planted at one step (`intervention.plant`), for testing what `gradvar diagnose` attributes a
spike to. Test-only: a run with a plant is a damaged run by design.

    lr@12:block1.mlp*100   the LR of one gradvar parameter group (gradvar.groups names) times 100 at step 12
    batch@12:random        the batch of step 12 replaced by uniformly random tokens
    batch@12:repeat        the batch of step 12 replaced by one token repeated

The LR plant gives the group's parameters optimizer groups of their own (same hyperparameters, so the update is
the same until the planted step); the records still log the scheduled LR, as a bug that scales one group's LR
would. The planted batch draws from its own generator, seeded by the run seed and the step, so the training
RNG and the data stream are left as they were: every other step sees the batch it would have seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .errors import ConfigError

_SPEC = re.compile(r"^(lr|batch)@(\d+):(.+)$")
BATCH_KINDS = ("random", "repeat")


@dataclass(frozen=True)
class Plant:
    kind: str
    """'lr' or 'batch'."""
    step: int
    group: str = ""
    """The gradvar group whose LR is scaled (kind 'lr')."""
    factor: float = 1.0
    batch: str = ""
    """'random' or 'repeat' (kind 'batch')."""

    def lr_scale(self, step: int, group: dict) -> float:
        """The factor on the scheduled LR of one optimizer group at `step`."""
        return self.factor if self.kind == "lr" and step == self.step and group.get("planted") else 1.0

    def replace_batch(self, step: int, batch: torch.Tensor, vocab_size: int, seed: int) -> torch.Tensor:
        """The planted batch at the planted step (same shape and dtype), else `batch` itself."""
        if self.kind != "batch" or step != self.step:
            return batch
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if self.batch == "random":
            return torch.randint(0, vocab_size, batch.shape, generator=gen, dtype=batch.dtype)
        token = int(torch.randint(0, vocab_size, (), generator=gen))
        return torch.full_like(batch, token)


def parse_plant(spec: str) -> Plant | None:
    """A Plant from its spec string; None for ''. ConfigError (one line) on anything else malformed."""
    if not spec:
        return None
    m = _SPEC.match(spec.strip())
    if not m:
        raise ConfigError(f"intervention.plant {spec!r}: expected 'lr@STEP:GROUP*FACTOR' or 'batch@STEP:random|repeat'")
    kind, step, rest = m.group(1), int(m.group(2)), m.group(3)
    if step < 1:
        raise ConfigError(f"intervention.plant {spec!r}: the step must be >= 1")
    if kind == "batch":
        if rest not in BATCH_KINDS:
            raise ConfigError(f"intervention.plant {spec!r}: the batch must be one of {', '.join(BATCH_KINDS)}")
        return Plant("batch", step, batch=rest)
    group, _, factor = rest.rpartition("*")
    try:
        value = float(factor)
    except ValueError:
        value = float("nan")
    if not group or not value > 0:
        raise ConfigError(f"intervention.plant {spec!r}: expected GROUP*FACTOR with a factor > 0")
    return Plant("lr", step, group=group, factor=value)
