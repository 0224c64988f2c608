"""gradvar in Hugging Face accelerate's accumulation loop, the monitor built after `accelerator.prepare`: one
row per optimizer step with every micro-batch counted, each paper column equal to the hand computation from
the micro-batch gradients (accelerate_loops.expected), in one process and on 2 gloo ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
from accelerate_loops import ACCUM, STEPS, expected, mismatches, run  # noqa: E402
from client_loops import notes  # noqa: E402
from gv_helpers import free_port  # noqa: E402

import gradvar  # noqa: E402

PAPER = (
    "loss loss_max grad_norm grad_norm_clipped grad_trace_sigma grad_true_sq grad_noise_scale grad_var_sum "
    "grad_var_max adam_v_max adam_v_l1 adam_v_min adam_vhat_max adam_vhat_l1 adam_m_norm lr micro_batches "
    "batch_size seqlen tokens nonfinite_grad"
).split()


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps its state in process-wide singletons: each test starts and ends without one."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.mark.parametrize("pass_loss", [True, False], ids=["loss-passed", "loss-inferred"])
def test_accumulation_loop_one_process(tmp_path, fresh_accelerate, pass_loss):
    """gradient_accumulation_steps=4, accelerator.clip_grad_norm_ on the sync step, Monitor.step() after every
    optimizer.step(): the three calls that take no step write nothing, the fourth writes the step's row."""
    out = run(tmp_path / "gv", pass_loss=pass_loss)
    steps = gradvar.read_records(tmp_path / "gv")["steps"]
    rows = expected([out], world=1)
    assert len(rows) == STEPS and all(len(s) == ACCUM for s in out["steps"])
    assert set(PAPER) <= set(rows[0]) and set(PAPER) <= set(steps.columns)
    assert mismatches(steps, rows) == []
    assert (steps.grad_norm > 0.05).all(), "every step clips: a read after clipping would show"
    assert notes(tmp_path / "gv") == [], "nothing is missing, so nothing to say"


@pytest.mark.slow
def test_accumulation_loop_two_gloo_ranks(tmp_path):
    """torchrun --nproc_per_node 2 with Accelerator(cpu=True) (MULTI_CPU: DDP over gloo, no_sync while accumulating):
    K = 8 micro-batches per step; grad_var_max is each rank's second moment about the global mean, maximal
    over ranks."""
    here = Path(__file__).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    path = os.pathsep.join(p for p in (str(here), os.environ.get("PYTHONPATH", "")) if p)
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=path)
    # torchrun starts the MULTI_CPU setup itself (`accelerate launch` goes through mpirun for it)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launch += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    run_dir = tmp_path / "gv"
    proc = subprocess.run(
        [*launch, str(here / "accelerate_run.py"), str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [torch.load(f"{run_dir}-rank{r}.pt", weights_only=False) for r in (0, 1)]
    steps = gradvar.read_records(run_dir)["steps"]
    rows = expected(ranks, world=2)
    assert len(rows) == STEPS and (steps.micro_batches == 2 * ACCUM).all() and (steps.world_size == 2).all()
    assert mismatches(steps, rows) == []
    assert notes(run_dir) == []
