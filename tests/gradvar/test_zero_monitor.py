"""DeepSpeed ZeRO stages 1, 2 and 3 on 2 gloo ranks (DeepSpeed's CPU accelerator), K = 2 accumulated
micro-batches per rank, DeepSpeed clipping at 0.3: every steps column of the paper preset (and update_rms,
the probe loss) and every per-group row equals a single process over the same 4 micro-batches; grad_norm is
the pre-clip norm the engine computed itself; the monitor's only collective is one all-gather per flush.
One torchrun launch runs the three stages (tests/gradvar/zero_loops.py): each start of DeepSpeed costs
seconds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gv_helpers import PAPER_COLUMNS
from zero_loops import CLIP, STEPS, K, single_run

import gradvar

pytest.importorskip("deepspeed")

STAGES = (1, 2, 3)
COLUMNS = (*PAPER_COLUMNS, "adam_v_mean", "seqlen")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero")
    script = Path(__file__).with_name("zero_loops.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    env = _env()
    proc = subprocess.run(
        [*cmd, str(out), *map(str, STAGES), "2bf16"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    single_run(out / "single")
    return out


def _env() -> dict:
    """One thread, DeepSpeed's CPU accelerator, no inherited rendezvous."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("TORCHELASTIC_")}
    return env | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_zero_records_equal_single_process(runs, stage):
    zero, single = gradvar.read_records(runs / f"zero{stage}"), gradvar.read_records(runs / "single")
    z, s = zero["steps"], single["steps"]
    assert z.step.tolist() == list(range(1, STEPS + 1)) and z.world_size.tolist() == [2.0] * STEPS
    assert z.micro_batches.tolist() == [K] * STEPS
    assert (z.grad_norm > CLIP).all()  # DeepSpeed clipped: grad_norm and grad_norm_clipped differ
    assert z[list(COLUMNS)].notna().all().all(), z[list(COLUMNS)].isna().sum()
    for col in COLUMNS:
        np.testing.assert_allclose(z[col].to_numpy(), s[col].to_numpy(), rtol=2e-5, err_msg=col)
    engine_norms = json.loads((runs / f"zero{stage}" / "engine_norms.json").read_text())
    np.testing.assert_allclose(z.grad_norm.to_numpy(), engine_norms, rtol=1e-5)
    # the monitor's collectives: none in any Monitor.step but the flushing one (flush_every=2), one per flush
    calls = json.loads((runs / f"zero{stage}" / "collectives.json").read_text())
    assert calls == {"steps": {"all_gather_single": 1}, "close": {"all_gather_single": 1}}, calls
    assert z.grad_var_max.isna().all() and s.grad_var_max.notna().all()
    notes = zero["events"].query("kind == 'note'").message
    assert notes.str.contains("grad_var_max is NaN under DeepSpeed ZeRO").sum() == 1
    key = ["step", "group", "stat"]
    zl = zero["layers"].sort_values(key).reset_index(drop=True)
    vhat = single["layers"].stat.str.startswith("adam_vhat")  # NaN under ZeRO, with a note
    sl = single["layers"][~vhat].sort_values(key).reset_index(drop=True)
    assert z.adam_vhat_max.isna().all() and notes.str.contains("adam_vhat_max and adam_vhat_l1 are NaN").sum() == 1
    assert zl[key].equals(sl[key]) and {"adam_v_max", "grad_norm", "grad_trace_sigma", "update_rms"} <= set(zl.stat)
    assert zl.value.notna().all()
    for stat, ref in sl.groupby("stat").value:
        # |G|^2 estimates of a group near zero are differences of much larger terms: float error relative to
        # the stat's scale, not to the (cancelled) value
        got = zl.value[ref.index].to_numpy()
        np.testing.assert_allclose(got, ref.to_numpy(), rtol=2e-5, atol=1e-5 * ref.abs().max(), err_msg=stat)


@pytest.mark.slow
def test_zero_bf16_records_the_engines_norm(runs):
    """bf16 weights and gradients, fp32 master partitions (stage 2): no fp32 reference to equal, but grad_norm is
    the engine's own pre-clip norm and every column is there, near the fp32 run's."""
    z, s = gradvar.read_records(runs / "zero2bf16")["steps"], gradvar.read_records(runs / "single")["steps"]
    engine_norms = json.loads((runs / "zero2bf16" / "engine_norms.json").read_text())
    np.testing.assert_allclose(z.grad_norm.to_numpy(), engine_norms, rtol=1e-5)
    assert z[list(COLUMNS)].notna().all().all(), z[list(COLUMNS)].isna().sum()
    for col in ("loss", "grad_norm", "adam_v_l1", "grad_trace_sigma"):
        np.testing.assert_allclose(z[col].to_numpy(), s[col].to_numpy(), rtol=0.05, err_msg=col)
