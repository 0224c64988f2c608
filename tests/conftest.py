"""Shared fixtures: one tokenized data cache per pytest run, a helper that runs the `smoke` preset (in
this process or as a `python -m trainer.cli` subprocess), and one uninterrupted 20-step reference run that
the resume, DDP, golden and fault tests compare against.

Everything runs on CPU with one thread per process (the test machines are small and shared).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

torch.set_num_threads(1)

SMOKE_STEPS = 20
"""The smoke preset's token budget (20 x 4 x 128) gives 20 optimizer steps."""


class Smoke:
    """Builds and runs `smoke` configs against the shared data cache."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)

    def cfg(self, out_dir, name: str = "run", overrides: dict | None = None):
        from trainer.config import apply_overrides
        from trainer.recipes import preset

        cfg = preset("smoke")
        base = {"out_dir": str(out_dir), "name": name, "data.cache_dir": str(self.cache_dir), "threads": 1}
        return apply_overrides(cfg, {**base, **(overrides or {})})

    def train(self, cfg, resume: bool = False, log=lambda *a, **k: None):
        """Run a Trainer in this process; returns its summary."""
        from trainer.train import Trainer

        t = Trainer(cfg, resume=resume, log=log)
        try:
            return t.run()
        finally:
            t.close()

    def cli_args(self, out_dir, name: str, *extra: str) -> list[str]:
        """Arguments for `python -m trainer.cli` (or torchrun) running the smoke preset."""
        return [
            "--preset",
            "smoke",
            "--out_dir",
            str(out_dir),
            "--name",
            name,
            "--data.cache_dir",
            str(self.cache_dir),
            "--threads",
            "1",
            *extra,
        ]

    @staticmethod
    def env(**extra: str) -> dict:
        """A subprocess environment: unbuffered output, one thread, no accidental GPU, no inherited faults."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADVAR_FAULT", "TORCHELASTIC_"))}
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(k, None)
        env.update(
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            CUDA_VISIBLE_DEVICES="",
            TOKENIZERS_PARALLELISM="false",
        )
        env.update(extra)
        return env

    def popen(
        self, args: list[str], logs: Path, *, torchrun: int = 0, torchrun_args: tuple = (), **env: str
    ) -> subprocess.Popen:
        """`python -m trainer.cli ARGS` (or `torchrun --standalone --nproc_per_node N -m trainer.cli ARGS` with
        torchrun=N) in a new process; its stdout and stderr go to logs/stdout.txt and logs/stderr.txt."""
        logs = Path(logs)
        logs.mkdir(parents=True, exist_ok=True)
        if torchrun:
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                str(torchrun),
                *torchrun_args,
                "-m",
                "trainer.cli",
                *args,
            ]
        else:
            cmd = [sys.executable, "-m", "trainer.cli", *args]
        with open(logs / "stdout.txt", "w") as out, open(logs / "stderr.txt", "w") as err:
            return subprocess.Popen(cmd, env=self.env(**env), stdout=out, stderr=err, text=True)

    @staticmethod
    def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
        """Poll a log file until `text` appears; fail (with the log tail) if the process ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = Path(path).read_text() if Path(path).exists() else ""
            if text in got:
                return
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        proc.kill()
        tail = "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in Path(path).parent.glob("*.txt"))
        pytest.fail(f"{text!r} never appeared in {path} (exit {proc.poll()}):\n{tail}")

    @staticmethod
    def steps(run_dir, errors: list | None = None) -> pd.DataFrame:
        import gradvar

        return gradvar.read_records(run_dir, ["steps"], errors=errors)["steps"]

    @staticmethod
    def final_state(run_dir) -> dict:
        from trainer.checkpoint import load_latest

        state, _ = load_latest(run_dir, log=lambda *a: None)
        return state


@dataclass
class Reference:
    run_dir: Path
    summary: dict
    steps: pd.DataFrame
    state: dict
    """The final checkpoint (model, optimizer, sampler, ...)."""


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """The smoke preset's tokenized Shakespeare (bpe2k), built once per pytest run.

    Set GRADVAR_TEST_DATA_CACHE to a folder to reuse a cache across pytest runs (its keys are content hashes)."""
    from trainer.data import prepare
    from trainer.recipes import preset

    folder = Path(os.environ.get("GRADVAR_TEST_DATA_CACHE") or tmp_path_factory.mktemp("data_cache"))
    cfg = preset("smoke").data
    cfg.cache_dir = str(folder)
    prepare(cfg)
    return folder


@pytest.fixture(scope="session")
def smoke(data_cache) -> Smoke:
    return Smoke(data_cache)


@pytest.fixture(scope="session")
def smoke_reference(smoke, tmp_path_factory) -> Reference:
    """The smoke preset run uninterrupted for its 20 steps (checkpoints at 10 and 20), in this process."""
    out = tmp_path_factory.mktemp("reference")
    cfg = smoke.cfg(out, "ref")
    summary = smoke.train(cfg)
    return Reference(cfg.run_dir, summary, smoke.steps(cfg.run_dir), smoke.final_state(cfg.run_dir))


@pytest.fixture(autouse=True)
def _restore_sigterm():
    """Trainer.run() installs a SIGTERM handler; put pytest's back after each test."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)
