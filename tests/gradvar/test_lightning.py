"""gradvar's Lightning callback: automatic optimization (accumulation, Lightning's clipping inside the closure
it passes to optimizer.step) and manual optimization, each column against the micro-batch gradients; training
identical with and without the callback."""

from __future__ import annotations

import pytest
import torch
from client_loops import check
from lightning_loops import ACCUM, CLIP, B, Module, Reference, T, fit

import gradvar
from gradvar.integrations.lightning import GradvarCallback


@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_lightning_columns_and_unchanged_training(tmp_path, manual):
    ref = Reference()
    monitored = Module(manual)
    fit(monitored, [ref, GradvarCallback(tmp_path / "gv")], tmp_path / "a", manual)
    bare = Module(manual)
    fit(bare, [], tmp_path / "b", manual)
    for p, q in zip(monitored.parameters(), bare.parameters()):
        assert torch.equal(p, q), "the callback changed training"
    steps = gradvar.read_records(tmp_path / "gv")["steps"]
    check(steps, ref.refs, b_s=B, seqlen=T)
    assert (steps.micro_batches == ACCUM).all() and (steps.grad_norm > CLIP).all()
    assert (steps.grad_norm_clipped <= CLIP + 1e-6).all()


@pytest.mark.slow
def test_lightning_ddp_strategy(tmp_path):
    """strategy="ddp" on 2 gloo processes (torchrun), accumulation 2: K = 4 micro-batches per step."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(here))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(here / "lightning_ddp_run.py"),
            str(tmp_path / "gv"),
        ],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK 3" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-5000:]
