"""Atomic checkpoints: write to a temporary name, fsync, rename; keep the newest N.

Loading uses torch.load(weights_only=True): nothing in a checkpoint file is executed. A truncated or
corrupted newest checkpoint is reported and the previous good one is used. torch.load does not check the
zip CRCs, so flipped bytes inside a tensor would load silently: each checkpoint gets a SHA-256 sidecar
(step-<step>.pt.sha256, hashed while writing), verified before loading; a checkpoint without one (older
runs) loads unverified.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

import torch

from gradvar.io import fault_point, fsync_dir

_NAME = re.compile(r"^step-(\d{9})\.(pt|dcp)$")  # .dcp: a sharded (FSDP2) checkpoint folder, see sharded_checkpoint


class CheckpointError(RuntimeError):
    pass


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


class _HashingWriter:
    """Passes torch.save's writes to a file and hashes them on the way (torch.save only calls write)."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify(path) -> None:
    """Raise CheckpointError if the file does not match its SHA-256 sidecar (no sidecar: nothing to check)."""
    path = Path(path)
    side = _sidecar(path)
    if not side.exists():
        return
    want = side.read_text().split()[0]
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            sha.update(chunk)
    if sha.hexdigest() != want:
        raise CheckpointError(f"SHA-256 mismatch with {side.name}: the file is corrupted")


def save(run_dir, step: int, state: dict, keep: int = 2, pinned=()) -> Path:
    """Write step-<step>.pt atomically; a write interrupted midway never replaces a good checkpoint. The newest
    `keep` are kept, and the `pinned` steps whatever their age."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:09d}.pt"
    tmp = folder / f".{path.name}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(state, writer)
            f.flush()
            fault_point("checkpoint_write")  # test-only (tests/faults); a no-op unless GRADVAR_FAULT is set
            os.fsync(f.fileno())
        side_tmp = folder / f".{path.name}.sha256.tmp{os.getpid()}"
        side_tmp.write_text(f"{writer.sha.hexdigest()}  {path.name}\n")
        os.replace(side_tmp, _sidecar(path))  # the checksum first: a checkpoint never appears without it
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write (full disk) as RuntimeError
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            why = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        else:
            why = f"the write failed (disk full or file size limit?): {str(exc)[:200]}"
        raise CheckpointError(f"could not write checkpoint {path}: {why}; the previous checkpoints are intact") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(folder)
    prunable = [(s, p) for s, p in list_checkpoints(run_dir) if s not in set(pinned)]
    for _, old in prunable[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        _sidecar(old).unlink(missing_ok=True)
    for stale in folder.glob(".step-*.tmp*"):  # left by a process killed while writing (never loaded)
        stale.unlink(missing_ok=True)
    return path


def load_latest(run_dir, map_location="cpu", log=print) -> tuple[dict, Path] | None:
    """The newest readable checkpoint (falling back past corrupted ones), or None if there is none."""
    candidates = [(s, p) for s, p in list_checkpoints(run_dir) if p.suffix == ".pt"]
    for _, path in reversed(candidates):
        try:
            verify(path)
            return torch.load(path, map_location=map_location, weights_only=True), path
        except Exception as exc:  # truncated zip, bad pickle, checksum mismatch: fall back to the previous one
            log(f"checkpoint {path} is unreadable ({type(exc).__name__}: {str(exc)[:120]}); trying the previous one")
    if candidates:
        raise CheckpointError(f"{checkpoint_dir(run_dir)}: no readable checkpoint among {len(candidates)}")
    return None


def rng_state() -> dict:
    """The random number generators a checkpoint restores (CPU, and every CUDA device when present)."""
    return {
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["rng_cpu"])
    if torch.cuda.is_available() and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state_all(state["rng_cuda"])
