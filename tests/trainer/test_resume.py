"""Exact resume: N steps uninterrupted equal k steps, stop, `--resume` to N, bit for bit; the records hold
each step once."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainer import cli

N = 20


def assert_same_state(a: dict, b: dict):
    assert a["step"] == b["step"] and a["tokens"] == b["tokens"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, sa in a["optimizer"]["state"].items():
        for k, v in sa.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)
    assert a["sampler"] == b["sampler"]


def assert_records_match(run_dir, reference, smoke):
    errors = []
    steps = smoke.steps(run_dir, errors=errors)
    assert not errors
    assert list(steps["step"]) == list(range(1, N + 1))  # every step once
    assert np.array_equal(steps["loss"].to_numpy(), reference.steps["loss"].to_numpy())  # exactly
    for col in ("tokens", "lr", "grad_norm", "adam_v_max", "grad_trace_sigma", "loss_ratio"):
        assert np.array_equal(steps[col].to_numpy(), reference.steps[col].to_numpy(), equal_nan=True), col


@pytest.mark.parametrize("k", [7, 10])
def test_stop_and_resume_is_exact(smoke, smoke_reference, tmp_path, k):
    """k=10 resumes from a regular checkpoint; k=7 from the end-of-run checkpoint (between two regular ones,
    after an evaluation at an odd step)."""
    cfg = smoke.cfg(tmp_path, "r", {"checkpoint.every": k, "optim.max_steps": k})
    first = smoke.train(cfg)
    assert first["steps"] == k
    assert list(smoke.steps(cfg.run_dir)["step"]) == list(range(1, k + 1))
    # `gradvar train --resume RUN_DIR --optim.max_steps N` in this process: the saved config.json is the base
    assert cli.main(["--resume", str(cfg.run_dir), "--optim.max_steps", str(N)]) == 0
    assert_records_match(cfg.run_dir, smoke_reference, smoke)
    assert_same_state(smoke.final_state(cfg.run_dir), smoke_reference.state)
    import gradvar

    tables = gradvar.read_records(cfg.run_dir)
    events = tables["events"]
    assert ((events["kind"] == "resume") & (events["step"] == k)).sum() == 1
    assert tables["evals"]["step"].is_unique
    final_val = tables["evals"].set_index("step")["val_loss"][N]
    assert final_val == smoke_reference.summary["final_val_loss"]


def test_resume_of_a_finished_run_does_nothing_more(smoke, smoke_reference, tmp_path):
    import shutil

    run_dir = tmp_path / "ref"
    shutil.copytree(smoke_reference.run_dir, run_dir)
    assert cli.main(["--resume", str(run_dir)]) == 0
    assert_records_match(run_dir, smoke_reference, smoke)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == N and summary["final_val_loss"] == smoke_reference.summary["final_val_loss"]


def test_resume_without_a_run_dir_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "no config.json (not a gradvar run directory)" in capsys.readouterr().err
