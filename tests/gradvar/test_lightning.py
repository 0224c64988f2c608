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


class MonitoredManual(Module):
    """Manual optimization with a Monitor of the user's own on `self.optimizers()`, Lightning's
    LightningOptimizer (a wrapper of the torch optimizer that copies none of its hooks)."""

    def __init__(self, run_dir):
        super().__init__(manual=True)
        self.run_dir = run_dir

    def on_train_start(self):
        from lightning.pytorch.core.optimizer import LightningOptimizer

        assert isinstance(self.optimizers(), LightningOptimizer)
        self.mon = gradvar.Monitor(self.gpt, self.optimizers(), self.run_dir, "paper")

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if (batch_idx + 1) % ACCUM == 0:  # after the step the module just took
            self.mon.step()
        return loss

    def on_train_end(self):
        self.mon.close()


class PausedReference(Reference):
    """The reference's own forwards are not the run's: the monitor does not see them."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with pl_module.mon.paused():
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)


def test_lightning_optimizer_wrapper(tmp_path):
    ref = PausedReference()
    module = MonitoredManual(tmp_path / "gv")
    fit(module, [ref], tmp_path / "a", manual=True)
    steps = gradvar.read_records(tmp_path / "gv")["steps"]
    check(steps, ref.refs, b_s=B, seqlen=T)
    v_max = max(s["exp_avg_sq"].max().item() for s in module.optimizers().optimizer.state.values())
    assert steps.adam_v_max.iloc[-1] == pytest.approx(v_max, rel=1e-6)
