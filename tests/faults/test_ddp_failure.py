"""One rank of a 2-rank gloo DDP job (torchrun, CPU) is SIGKILLed mid-run.

With `--max-restarts 1` torchrun restarts every worker with TORCHELASTIC_RESTART_COUNT=1, and the trainer
resumes from the run's newest good checkpoint by itself (trainer/cli.py): the job ends with status 0 and
the same losses as an uninterrupted run. Without restarts the job exits non-zero, torchrun names the failed
rank and its signal, and the records flushed before the failure are intact.

Where: GRADVAR_FAULT=checkpoint_write@2 holds rank 0 for 3 s inside the checkpoint of step 10 (written but
not yet renamed; rank 1 waits at the barrier after it), and the test kills rank 1 then.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import numpy as np
import pytest

import gradvar
from trainer.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow


def worker_pid(tag: str, rank: int) -> int:
    """The pid of the torchrun worker with this test's tag and RANK=rank (found through /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            entries = (entry / "environ").read_bytes().decode(errors="replace").split("\0")
            env = dict(kv.split("=", 1) for kv in entries if "=" in kv)
        except OSError:
            continue
        if env.get("GRADVAR_TEST_TAG") == tag and env.get("RANK") == str(rank) and "TORCHELASTIC_RUN_ID" in env:
            return int(entry.name)
    raise AssertionError(f"no worker with RANK={rank}")


def start_and_kill_rank1(smoke, tmp_path, torchrun_args=()):
    tag = uuid.uuid4().hex
    logs = tmp_path / "logs"
    proc = smoke.popen(
        smoke.cli_args(tmp_path, "run", "--checkpoint.every", "5"),
        logs,
        torchrun=2,
        torchrun_args=torchrun_args,
        GRADVAR_FAULT="checkpoint_write@2",
        GRADVAR_FAULT_SLEEP="3",
        GRADVAR_TEST_TAG=tag,
    )
    smoke.wait_for(logs / "stderr.txt", "GRADVAR_FAULT checkpoint_write", proc)
    os.kill(worker_pid(tag, 1), signal.SIGKILL)
    rc = proc.wait(timeout=300)
    return rc, tmp_path / "run", (logs / "stdout.txt").read_text(), (logs / "stderr.txt").read_text()


def test_killed_rank_is_restarted_and_resumes(smoke, smoke_reference, tmp_path):
    rc, run_dir, out, err = start_and_kill_rank1(smoke, tmp_path, ("--max-restarts", "1"))
    assert rc == 0, err[-4000:]
    errors = []
    tables = gradvar.read_records(run_dir, errors=errors)
    assert not errors
    steps = tables["steps"]
    assert list(steps["step"]) == list(range(1, 21))  # every step once, the redone ones included
    np.testing.assert_allclose(steps["loss"], smoke_reference.steps["loss"], rtol=1e-5)
    resumes = tables["events"].query("kind == 'resume'")
    assert len(resumes) == 1 and int(resumes["step"].iloc[0]) in (5, 10)  # step 10's write may finish first
    assert "resumed from" in out
    assert [s for s, _ in list_checkpoints(run_dir)][-1] == 20
    summary = __import__("json").loads((run_dir / "summary.json").read_text())
    assert summary["final_val_loss"] == pytest.approx(smoke_reference.summary["final_val_loss"], rel=1e-5)


def test_killed_rank_without_restarts_fails_clearly(smoke, tmp_path):
    rc, run_dir, out, err = start_and_kill_rank1(smoke, tmp_path)
    assert rc != 0
    assert "ChildFailedError" in err and "Signal 9 (SIGKILL)" in err, err[-4000:]  # torchrun's failure report
    errors = []
    steps = gradvar.read_records(run_dir, ["steps"], errors=errors)["steps"]
    assert not errors
    assert list(steps["step"]) == list(range(1, 11))  # flushed before step 10's checkpoint, all intact
    assert not (run_dir / "summary.json").exists()
    assert [s for s, _ in list_checkpoints(run_dir)] in ([5], [5, 10])
