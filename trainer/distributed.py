"""torch.distributed setup: torchrun's environment, gloo on CPU (one thread per rank), NCCL on CUDA."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available (is the CUDA build of torch installed?)")
    if world == 1:
        return Dist(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        if restart > 0:
            # torchrun --max-restarts: the new workers share the agent's TCPStore with the failed attempt, whose
            # keys (the peers' old gloo addresses, NCCL ids) are still there; a rank that starts faster than its
            # peers reads them and fails with "connection refused". A per-attempt prefix keeps attempts apart.
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                world,
                is_master=rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True",
            )
            dist.init_process_group(
                backend, store=dist.PrefixStore(f"attempt{restart}", store), rank=rank, world_size=world
            )
        else:
            dist.init_process_group(backend=backend)
    return Dist(rank, local, world, torch.device(f"cuda:{local}" if use_cuda else "cpu"))


def barrier(d: Dist) -> None:
    if d.world_size > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world_size > 1:
        dist.all_reduce(t)
    return t


def any_rank(flag: bool, d: Dist) -> bool:
    """True when any rank says so (a collective: every rank must call it at the same step)."""
    if d.world_size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)  # sync: only called every log_every steps


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
