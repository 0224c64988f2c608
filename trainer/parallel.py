"""How the model is spread over ranks: DDP (replicated, all-reduced gradients) or FSDP2 (each GPT-2 block and
the root sharded with fully_shard, bf16 mixed precision on CUDA, sharded checkpoints). One process trains the
plain model under either name. The trainer talks to a Strategy only: wrap, no-sync, save, load.
"""

from __future__ import annotations

import contextlib

import torch

from . import checkpoint as ckpt
from .distributed import Dist


class Strategy:
    """One process or DDP: the model state is whole on every rank; rank 0 writes one checkpoint file."""

    collective_forward = False
    """True when a forward is a collective (FSDP2): every rank must run the same forwards."""

    def __init__(self, d: Dist):
        self.d = d

    def shard(self, model: torch.nn.Module, bf16: bool) -> bool:
        """Shard the model in place before its optimizer is built; True when the strategy casts to bf16
        itself (then no autocast)."""
        return False

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training forwards go through."""
        if self.d.world_size == 1:
            return model
        ids = [self.d.local_rank] if self.d.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sync(self, wrapped, last: bool):
        """Context of one micro-batch's forward and backward: gradients are reduced on the last only."""
        return contextlib.nullcontext() if last or self.d.world_size == 1 else wrapped.no_sync()

    def save(self, run_dir, step: int, model, optimizer, extra: dict, keep: int, pinned=()):
        if self.d.is_main:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **extra}
            return ckpt.save(run_dir, step, state, keep, pinned)
        return None

    def load_latest(self, run_dir, model, optimizer, log) -> tuple[dict, object] | None:
        found = ckpt.load_latest(run_dir, map_location=self.d.device, log=log)
        if found is None:
            return None
        state, path = found
        model.load_state_dict(state.pop("model"))
        optimizer.load_state_dict(state.pop("optimizer"))
        return state, path


class FSDP(Strategy):
    collective_forward = True

    def shard(self, model, bf16):
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if self.d.world_size == 1:
            return False
        # bf16 compute, fp32 gradient reduction and fp32 master weights (the sharded parameters)
        mp = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if bf16
            else MixedPrecisionPolicy()
        )
        for block in model.transformer.h:
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return bf16

    def wrap(self, model):
        return model

    def sync(self, wrapped, last):
        if self.d.world_size > 1:
            wrapped.set_requires_gradient_sync(last)  # reduce-scatter on the last micro-batch only
        return contextlib.nullcontext()

    def save(self, run_dir, step, model, optimizer, extra, keep, pinned=()):
        if self.d.world_size == 1:
            return super().save(run_dir, step, model, optimizer, extra, keep, pinned)
        from . import sharded_checkpoint

        return sharded_checkpoint.save(run_dir, step, model, optimizer, extra, keep)

    def load_latest(self, run_dir, model, optimizer, log):
        if self.d.world_size == 1:
            return super().load_latest(run_dir, model, optimizer, log)
        from . import sharded_checkpoint

        return sharded_checkpoint.load_latest(run_dir, model, optimizer, log)


def make(name: str, d: Dist) -> Strategy:
    return {"ddp": Strategy, "fsdp": FSDP}[name](d)


def eval_chunks(chunks: list, d: Dist, collective: bool) -> list[tuple[torch.Tensor, float]]:
    """This rank's share of the evaluation chunks, as (chunk, weight). When a forward is collective every
    rank runs the same number of them: ranks with one chunk fewer repeat one with weight 0."""
    mine = [(x, 1.0) for x in chunks[d.rank :: d.world_size]]
    if collective:
        rounds = -(-len(chunks) // d.world_size)
        mine += [(chunks[0], 0.0)] * (rounds - len(mine))
    return mine
