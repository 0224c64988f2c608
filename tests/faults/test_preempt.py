"""SIGTERM (what schedulers send before killing): the trainer finishes the step, flushes its records, writes a
checkpoint and exits with status 75 (EX_TEMPFAIL) within a bounded time; `--resume` continues from there."""

from __future__ import annotations

import json
import signal
import time

import pytest

import gradvar
from trainer import cli
from trainer.checkpoint import list_checkpoints
from trainer.train import EXIT_PREEMPTED

DEADLINE_S = 20.0


@pytest.mark.slow
def test_sigterm_checkpoints_flushes_and_exits_75(smoke, tmp_path):
    logs = tmp_path / "logs"
    # a long budget (1000 steps) so the run is surely mid-way; no regular checkpoint before the signal
    proc = smoke.popen(
        smoke.cli_args(
            tmp_path,
            "run",
            "--log_every",
            "1",
            "--optim.train_tokens",
            "512000",
            "--checkpoint.every",
            "0",
            "--eval.every",
            "0",
        ),
        logs,
    )
    smoke.wait_for(logs / "stdout.txt", "step      6 |", proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    took = time.monotonic() - t0
    out = (logs / "stdout.txt").read_text()
    assert rc == EXIT_PREEMPTED == 75, (logs / "stderr.txt").read_text()[-3000:]
    assert took < DEADLINE_S, f"took {took:.1f} s to exit after SIGTERM"

    run_dir = tmp_path / "run"
    ckpts = list_checkpoints(run_dir)
    assert len(ckpts) == 1
    stopped = ckpts[0][0]
    assert 6 <= stopped < 100 and f"preempted: checkpoint written at step {stopped}" in out
    print(f"SIGTERM after step >= 6 -> exit 75 in {took:.2f} s, checkpoint at step {stopped}")
    errors = []
    tables = gradvar.read_records(run_dir, errors=errors)
    assert not errors
    assert list(tables["steps"]["step"]) == list(range(1, stopped + 1))  # every step up to the signal is on disk
    events = tables["events"]
    assert list(events.query("kind == 'preempt'")["step"]) == [stopped]
    assert not (run_dir / "summary.json").exists()

    # resume (the in-process `gradvar train --resume`) for three more steps
    assert cli.main(["--resume", str(run_dir), "--optim.max_steps", str(stopped + 3)]) == 0
    steps = gradvar.read_records(run_dir, ["steps"])["steps"]
    assert list(steps["step"]) == list(range(1, stopped + 4))
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == stopped + 3
