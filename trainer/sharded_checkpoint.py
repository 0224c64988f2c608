"""Sharded checkpoints for FSDP2 runs (torch.distributed.checkpoint), atomic like the single-file ones.

checkpoints/step-<step>.dcp/ holds DCP's files (each rank writes its own shards of the model and the
optimizer; rank 0 the metadata), extra.pt (the rest of the trainer's state, from rank 0) and manifest.sha256
(a SHA-256 of every file). Every rank writes under a temporary folder name; after a barrier rank 0 writes
the manifest, fsyncs and renames the folder: a save killed midway leaves only a temporary folder, which is
never loaded and is removed by the next save. Loading verifies the manifest and falls back to the previous
checkpoint as the single-file loader does; every rank reads the same files, so all take the same decision.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from gradvar.io import fault_point, fsync_dir

from .checkpoint import CheckpointError, checkpoint_dir, list_checkpoints

MANIFEST, EXTRA = "manifest.sha256", "extra.pt"


def _sha(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            sha.update(chunk)
    return sha.hexdigest()


def save(run_dir, step: int, model, optimizer, extra: dict, keep: int = 2) -> Path:
    """Collective: every rank calls it. `extra` (sampler, RNG, counters, monitor) is written by rank 0."""
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint import save as dcp_save
    from torch.distributed.checkpoint.state_dict import get_state_dict

    folder = checkpoint_dir(run_dir)
    path = folder / f"step-{step:09d}.dcp"
    tmp = folder / f".{path.name}.tmp"
    rank = dist.get_rank()
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".step-*.dcp*.tmp"):  # left by a save that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp_save({"model": model_sd, "optimizer": optim_sd}, storage_writer=FileSystemWriter(tmp, sync_files=True))
    if rank == 0:
        with open(tmp / EXTRA, "wb") as f:
            torch.save(extra, f)
            f.flush()
            fault_point("checkpoint_write")  # test-only (tests/faults); a no-op unless GRADVAR_FAULT is set
            os.fsync(f.fileno())
        lines = [f"{_sha(p)}  {p.name}\n" for p in sorted(tmp.iterdir()) if p.is_file()]
        (tmp / MANIFEST).write_text("".join(lines))
        fsync_dir(tmp)
        old = folder / f".{path.name}.old.tmp"  # the same step saved again (the final save): replace it
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(folder)
        shutil.rmtree(old, ignore_errors=True)
        for _, old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    dist.barrier()
    return path


def verify(path: Path) -> None:
    manifest = path / MANIFEST
    if not manifest.exists():
        raise CheckpointError(f"{path.name} has no {MANIFEST}: not a complete sharded checkpoint")
    for line in manifest.read_text().splitlines():
        want, name = line.split(maxsplit=1)
        if _sha(path / name) != want:
            raise CheckpointError(f"SHA-256 mismatch for {name}: the checkpoint is corrupted")


def load_latest(run_dir, model, optimizer, log=print) -> tuple[dict, Path] | None:
    """Load the newest good sharded checkpoint into `model` and `optimizer` (collective); returns its extra
    state and path, or None when there is none."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint import load as dcp_load
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    candidates = [(s, p) for s, p in list_checkpoints(run_dir) if p.is_dir()]
    for _, path in reversed(candidates):
        try:
            verify(path)
            extra = torch.load(path / EXTRA, map_location="cpu", weights_only=True)
        except Exception as exc:  # a missing or corrupted file: fall back to the previous one
            log(f"checkpoint {path} is unreadable ({type(exc).__name__}: {str(exc)[:120]}); trying the previous one")
            continue
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optimizer": optim_sd}
        dcp_load(state, storage_reader=FileSystemReader(path))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        return extra, path
    if candidates:
        raise CheckpointError(f"{checkpoint_dir(run_dir)}: no readable checkpoint among {len(candidates)}")
    return None


def to_full_state(path) -> dict:
    """One process, no process group: the whole checkpoint as plain tensors ({model, optimizer} + extra),
    for tests and for converting a sharded run's checkpoint to a single file."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    path = Path(path)
    out = path.parent / f".{path.name}.full.pt"
    try:
        dcp_to_torch_save(path, out)
        state = torch.load(out, map_location="cpu", weights_only=False)
    finally:
        out.unlink(missing_ok=True)
    state.update(torch.load(path / EXTRA, map_location="cpu", weights_only=True))
    return state
