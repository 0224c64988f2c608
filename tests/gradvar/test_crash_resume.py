"""SIGKILL a recording process: every flushed row reads back. Resume: no duplicated or missing steps and
the spike detector continues where it was."""

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import torch

import gradvar

SCRIPT = textwrap.dedent("""
    import sys, time, torch, gradvar
    run_dir, flush = sys.argv[1], int(sys.argv[2])
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, run_dir, "paper", flush_every=flush, infer_inputs=False)
    for step in range(1, 10**9):
        model(torch.randn(4, 8)).pow(2).mean().backward()
        opt.step(); opt.zero_grad()
        mon.step(loss=torch.tensor(1.0 + 1.0 / step), seqlen=8, tokens=32 * step)
        if step % flush == 0 or step == 5:
            print(step, flush=True)
        time.sleep(0.002)
""")


def test_sigkill_keeps_every_flushed_row(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), "10"], stdout=subprocess.PIPE, text=True)
    flushed = 0
    while flushed < 120:
        flushed = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = gradvar.read_records(tmp_path)["steps"]
    assert len(steps) >= 120 and len(steps) % 10 == 0
    assert steps.step.tolist() == list(range(1, len(steps) + 1))


def test_sigterm_flushes_before_exiting(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), "1000"], stdout=subprocess.PIPE, text=True)
    assert int(proc.stdout.readline()) == 5  # the monitor is up and recording
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    t = gradvar.read_records(tmp_path)
    assert len(t["steps"]) >= 5, "unflushed steps were written on SIGTERM"
    assert "preempt" in set(t["events"].kind)


def _run(run_dir, losses, resume_step=None, state=None):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = gradvar.Monitor(model, opt, run_dir, "paper", flush_every=4, resume_step=resume_step, infer_inputs=False)
    if state:
        mon.load_state_dict(state)
    start = mon.step_num
    for i, v in enumerate(losses):
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
        opt.zero_grad()
        mon.step(loss=torch.tensor(v), seqlen=2, tokens=2 * (start + i + 1))
        if start + i + 1 == 12:
            saved = mon.state_dict()
    mon.close()
    return locals().get("saved")


def test_resume_appends_without_duplicates_and_keeps_detector_state(tmp_path):
    rng = np.random.default_rng(0)
    losses = list(3 + 0.01 * rng.standard_normal(30))
    losses[20] = 9.0  # a spike after the resume point: found only if the detector kept its history
    _run(tmp_path / "full", losses)
    state = _run(tmp_path / "crashed", losses[:18])  # ran past its step-12 checkpoint, then died
    _run(tmp_path / "crashed", losses[12:], resume_step=12, state=state)
    full = gradvar.read_records(tmp_path / "full")["steps"]
    resumed = gradvar.read_records(tmp_path / "crashed")["steps"]
    assert resumed.step.tolist() == list(range(1, 31))
    for col in ("loss", "loss_ratio", "spike_ratio", "spike_z", "tokens"):
        assert np.allclose(resumed[col], full[col], equal_nan=True), col
    assert resumed.spike_z[20] == 1.0


def test_uncaught_exception_still_writes_the_finished_steps(tmp_path):
    script = textwrap.dedent("""
        import sys, torch, gradvar
        model = torch.nn.Linear(4, 1); opt = torch.optim.AdamW(model.parameters())
        mon = gradvar.Monitor(model, opt, sys.argv[1], "paper", flush_every=100, infer_inputs=False)
        for i in range(7):
            model(torch.randn(2, 4)).mean().backward(); opt.step(); opt.zero_grad(); mon.step(loss=torch.tensor(1.0))
        raise RuntimeError("boom")
    """)
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1 and "boom" in res.stderr
    assert gradvar.read_records(tmp_path)["steps"].step.tolist() == list(range(1, 8))
