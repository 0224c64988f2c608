"""SIGKILL a CPU training run (`python -m trainer.cli`, the smoke preset: checkpoints at steps 10 and 20,
records flushed every 5 steps) at three points, resume it with `--resume`, and compare with the
uninterrupted reference run: per-step losses and final parameters equal exactly, the records hold every
step once, and a checkpoint write cut short never replaces the previous good checkpoint.

The kill points are exact: GRADVAR_FAULT="<point>@<n>" makes the n-th arrival at a point print a marker and
sleep (see gradvar.io.fault_point), and the test sends SIGKILL when it sees the marker. "Inside a step"
uses timing instead (the kill follows the progress line of step 13, while step 14 computes).
"""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch

import gradvar
from trainer import cli
from trainer.checkpoint import list_checkpoints, load_latest


def kill_at(smoke, tmp_path, marker: str, *extra: str, **env: str):
    logs = tmp_path / "logs"
    proc = smoke.popen(smoke.cli_args(tmp_path, "run", *extra), logs, **env)
    smoke.wait_for(logs / ("stderr.txt" if "GRADVAR_FAULT" in env else "stdout.txt"), marker, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    return tmp_path / "run"


def resume_and_compare(smoke, reference, run_dir, expect_resume_step: int):
    state, path = load_latest(run_dir, log=lambda *a: None)
    assert state["step"] == expect_resume_step
    assert cli.main(["--resume", str(run_dir)]) == 0

    errors = []
    tables = gradvar.read_records(run_dir, errors=errors)
    assert not errors
    steps = tables["steps"]
    assert list(steps["step"]) == list(range(1, 21))  # every step exactly once
    assert np.array_equal(steps["loss"].to_numpy(), reference.steps["loss"].to_numpy())
    assert np.array_equal(steps["grad_norm"].to_numpy(), reference.steps["grad_norm"].to_numpy())
    for table in ("layers", "evals"):
        key = ["step", "group", "stat"] if table == "layers" else ["step"]
        assert not tables[table].duplicated(key).any(), table
    assert list(tables["evals"]["step"]) == list(reference_evals(reference))
    resumes = tables["events"].query("kind == 'resume'")
    assert list(resumes["step"]) == [expect_resume_step]

    final = smoke.final_state(run_dir)
    assert final["step"] == 20
    for k, v in reference.state["model"].items():
        assert torch.equal(final["model"][k], v), k
    for i, s in reference.state["optimizer"]["state"].items():
        for k, v in s.items():
            assert torch.equal(final["optimizer"]["state"][i][k], v), (i, k)
    assert [s for s, _ in list_checkpoints(run_dir)] == [10, 20]
    assert not list((run_dir / "checkpoints").glob(".*tmp*")), "a stale temporary checkpoint was left behind"


def reference_evals(reference):
    return gradvar.read_records(reference.run_dir, ["evals"])["evals"]["step"]


@pytest.mark.slow
def test_kill_inside_a_step(smoke, smoke_reference, tmp_path):
    run_dir = kill_at(smoke, tmp_path, "step     13 |", "--log_every", "1")
    steps = smoke.steps(run_dir)
    assert 10 <= steps["step"].max() < 20  # flushed rows past the checkpoint are redone on resume
    resume_and_compare(smoke, smoke_reference, run_dir, expect_resume_step=10)


@pytest.mark.slow
def test_kill_during_a_records_flush(smoke, smoke_reference, tmp_path):
    """Parquet part writes of the smoke run: steps, layers at step 5 (1st, 2nd); steps, layers, evals at 10;
    steps (6th) and layers (7th) at 15. Killing in the 7th leaves the flush of step 15 half done: its steps
    part is in place, its layers part only under a temporary name (which readers ignore)."""
    run_dir = kill_at(smoke, tmp_path, "GRADVAR_FAULT records_write", GRADVAR_FAULT="records_write@7")
    partial = list((run_dir / "records").glob("*/.L0-*.parquet.tmp*"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the write that was cut short
    cut = partial[0].parent.name
    errors = []
    tables = gradvar.read_records(run_dir, errors=errors)
    assert not errors  # a part is either complete or absent
    assert cut == "layers", f"the 7th part write was {cut}: the flush order changed, pick another n"
    assert tables["steps"]["step"].max() == 15 and tables["layers"]["step"].max() == 10
    resume_and_compare(smoke, smoke_reference, run_dir, expect_resume_step=10)


@pytest.mark.slow
def test_kill_during_a_checkpoint_write(smoke, smoke_reference, tmp_path):
    """Killed while step 20's checkpoint is written under its temporary name: step 10's stays the newest."""
    run_dir = kill_at(smoke, tmp_path, "GRADVAR_FAULT checkpoint_write", GRADVAR_FAULT="checkpoint_write@2")
    folder = run_dir / "checkpoints"
    assert [s for s, _ in list_checkpoints(run_dir)] == [10]
    partial = list(folder.glob(".step-000000020.pt.tmp*"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    assert smoke.steps(run_dir)["step"].max() == 20  # records are flushed before a checkpoint is written
    resume_and_compare(smoke, smoke_reference, run_dir, expect_resume_step=10)


def test_fault_hook_is_inert_without_the_variable(monkeypatch, capsys):
    """Unset, or naming another point, the hook neither sleeps nor prints nor counts; set, it stops at the
    n-th hit of its point only."""
    import time

    from gradvar import io, records

    monkeypatch.setattr(records, "_FAULT_HITS", {})
    monkeypatch.setenv("GRADVAR_FAULT_SLEEP", "30")  # a hit would hang the test for 30 s

    def timed_hit(point: str) -> float:
        t = time.perf_counter()
        io.fault_point(point)
        return time.perf_counter() - t

    monkeypatch.delenv("GRADVAR_FAULT", raising=False)
    assert max(timed_hit("records_write") for _ in range(100)) < 0.1
    monkeypatch.setenv("GRADVAR_FAULT", "checkpoint_write@1")
    assert max(timed_hit("records_write") for _ in range(100)) < 0.1
    assert capsys.readouterr().err == "" and records._FAULT_HITS == {}

    monkeypatch.setenv("GRADVAR_FAULT", "checkpoint_write@2")
    monkeypatch.setenv("GRADVAR_FAULT_SLEEP", "0.3")
    assert timed_hit("checkpoint_write") < 0.1 and capsys.readouterr().err == ""  # the first hit passes
    assert timed_hit("checkpoint_write") >= 0.3  # the second stops, and says so
    assert capsys.readouterr().err.startswith("GRADVAR_FAULT checkpoint_write reached (checkpoint_write@2, pid ")
    assert timed_hit("checkpoint_write") < 0.1  # once only
