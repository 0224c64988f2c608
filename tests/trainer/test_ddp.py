"""A 2-rank gloo DDP run (torchrun, CPU) equals a single-process run with the same global batch: losses per
step, the final validation loss and gradvar's gradient-noise estimates, to float tolerance.

Both runs average K = 2 micro-batches of 2 sequences per step (one process: 2 accumulation steps; DDP: one
micro-batch on each rank), so tr(Sigma) and |G|^2 estimate the same thing from the same gradients.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import gradvar


@pytest.mark.slow
def test_two_rank_gloo_run_matches_single_process(smoke, smoke_reference, tmp_path):
    logs = tmp_path / "logs"
    proc = smoke.popen(smoke.cli_args(tmp_path, "ddp"), logs, torchrun=2)  # torchrun --standalone: its own port
    assert proc.wait(timeout=300) == 0, (logs / "stderr.txt").read_text()[-3000:]

    run_dir = tmp_path / "ddp"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["meta"]["world_size"] == 2
    errors = []
    tables = gradvar.read_records(run_dir, errors=errors)
    assert not errors
    ddp, ref = tables["steps"], smoke_reference.steps
    assert list(ddp["step"]) == list(ref["step"]) == list(range(1, 21))
    assert (ddp["world_size"] == 2).all() and (ddp["micro_batches"] == ref["micro_batches"]).all()
    assert np.array_equal(ddp["tokens"], ref["tokens"]) and np.allclose(ddp["lr"], ref["lr"], rtol=1e-12)
    np.testing.assert_allclose(ddp["loss"], ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(ddp["loss_max"], ref["loss_max"], rtol=1e-5)
    np.testing.assert_allclose(ddp["grad_norm"], ref["grad_norm"], rtol=1e-4)
    for col in ("grad_trace_sigma", "grad_true_sq"):
        assert ref[col].notna().all(), col
        np.testing.assert_allclose(ddp[col], ref[col], rtol=1e-3, atol=1e-6, err_msg=col)
    np.testing.assert_allclose(ddp["adam_v_max"], ref["adam_v_max"], rtol=1e-3)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_val_loss"] == pytest.approx(smoke_reference.summary["final_val_loss"], rel=1e-5)
    ranks = tables["ranks"]  # the per-rank table exists only under DDP
    assert sorted(ranks["rank"].unique()) == [0, 1] and len(ranks) == 2 * 20
