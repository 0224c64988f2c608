"""Run a grid of trainings side by side: every run is a `python -m trainer.cli` subprocess (one thread
each, `jobs` at a time) writing its own run directory. A finished run (its summary.json exists) is skipped
and an interrupted one resumes from its checkpoint, so rerunning the same grid continues where it stopped.
`gradvar study` and `gradvar tune-slw` are built on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from trainer.live import Progress


@dataclass
class RunSpec:
    """One training run of a grid."""

    name: str
    """Run name; its directory is out_root/name."""
    overrides: dict
    """Config fields set for this run, by dotted key."""
    group: str
    """Runs that differ only by seed share a group (medians and spread are taken over it)."""
    role: str = "grid"
    """grid, sweep (the LR sweep) or control."""
    labels: dict = field(default_factory=dict)
    """Free-form labels the report groups by (method, lr, batch)."""


@dataclass
class Grid:
    """A named set of runs, all started from one trainer preset."""

    name: str
    preset: str
    """The trainer preset every run starts from."""
    runs: list
    jobs: int = 2
    """Runs side by side."""


def run_dir(out_root: Path, spec: RunSpec) -> Path:
    return out_root / spec.name


def is_complete(path: Path) -> bool:
    return (path / "summary.json").exists()


def command(grid: Grid, spec: RunSpec, out_root: Path) -> list[str]:
    path = run_dir(out_root, spec)
    cmd = [sys.executable, "-m", "trainer.cli"]
    if (path / "checkpoints").is_dir() and any((path / "checkpoints").iterdir()):
        return cmd + ["--resume", str(path)]
    cmd += ["--preset", grid.preset, "--name", spec.name, "--out_dir", str(out_root)]
    for key, value in spec.overrides.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
    return cmd


def run_all(grid: Grid, out_root: Path, jobs: int, log=print) -> list[Path]:
    """Run every missing run, `jobs` at a time; returns the run directories in spec order."""
    out_root.mkdir(parents=True, exist_ok=True)
    todo = [s for s in grid.runs if not is_complete(run_dir(out_root, s))]
    n, done, started, finished_here = len(grid.runs), len(grid.runs) - len(todo), time.time(), 0
    log(f"{grid.name}: {n} runs, {done} already complete, {len(todo)} to run, {jobs} at a time")
    bar = Progress(n, unit="run", desc=f"study {grid.name}", initial=done, log=log)  # a bar on a terminal
    log = bar.write
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    running: list[tuple[RunSpec, subprocess.Popen]] = []
    failed = []
    while todo or running:
        while todo and len(running) < jobs:
            spec = todo.pop(0)
            path = run_dir(out_root, spec)
            path.mkdir(parents=True, exist_ok=True)
            with open(path / "log.txt", "a") as logf:
                proc = subprocess.Popen(command(grid, spec, out_root), stdout=logf, stderr=subprocess.STDOUT, env=env)
            running.append((spec, proc))
        time.sleep(1.0)
        for spec, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((spec, proc))
            done, finished_here = done + 1, finished_here + 1
            if proc.returncode != 0 or not is_complete(run_dir(out_root, spec)):
                failed.append(spec.name)
                log(f"  run {spec.name} failed (exit {proc.returncode}); see {run_dir(out_root, spec) / 'log.txt'}")
            elapsed = time.time() - started
            eta = elapsed / finished_here * (len(todo) + len(running))  # wall time per finished run so far
            bar.update_to(done)
            log(f"  run {done} of {n} done: {spec.name} | elapsed {elapsed / 60:.1f} min | ETA {eta / 60:.1f} min")
    bar.close()
    if failed:
        log(f"{len(failed)} runs failed: {', '.join(failed)}; rerun the same command to retry them")
    return [run_dir(out_root, s) for s in grid.runs if is_complete(run_dir(out_root, s))]
