"""Atomic checkpoints: write to a temporary name, fsync, rename; keep the newest N.

Loading uses torch.load(weights_only=True): nothing in a checkpoint file is executed. A truncated or
corrupted newest checkpoint is reported and the previous good one is used.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import torch

from gradvar.records import fault_point

_NAME = re.compile(r"^step-(\d{9})\.pt$")


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


def save(run_dir, step: int, state: dict, keep: int = 2) -> Path:
    """Write step-<step>.pt atomically; a write interrupted midway never replaces a good checkpoint."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:09d}.pt"
    tmp = folder / f".{path.name}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            fault_point("checkpoint_write")  # test-only (tests/faults); a no-op unless GRADVAR_FAULT is set
            os.fsync(f.fileno())
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
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for _, old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    for stale in folder.glob(".step-*.pt.tmp*"):  # left by a process killed while writing (never loaded)
        stale.unlink(missing_ok=True)
    return path


def load_latest(run_dir, map_location="cpu", log=print) -> tuple[dict, Path] | None:
    """The newest readable checkpoint (falling back past corrupted ones), or None if there is none."""
    candidates = list_checkpoints(run_dir)
    for _, path in reversed(candidates):
        try:
            return torch.load(path, map_location=map_location, weights_only=True), path
        except Exception as exc:  # truncated zip, bad pickle, ...: fall back to the previous one
            log(f"checkpoint {path} is unreadable ({type(exc).__name__}: {str(exc)[:120]}); trying the previous one")
    if candidates:
        raise CheckpointError(f"{checkpoint_dir(run_dir)}: no readable checkpoint among {len(candidates)}")
    return None
