"""What people watch: `--log.tensorboard` / `--log.wandb` put the run's records in the dashboards (read back
with their own readers), and `gradvar train` draws a tqdm bar on a terminal and plain lines elsewhere."""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
from dashboard_files import tensorboard_scalars, wandb_history


@pytest.mark.slow  # a smoke run with W&B starting its offline service (about 25 s)
def test_trainer_flags_fill_both_dashboards(smoke, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = smoke.cfg(
        tmp_path, "live", {"log.tensorboard": "run", "log.wandb": "gradvar-test", "optim.train_tokens": 6 * 4 * 128}
    )
    lines = []
    smoke.train(cfg, log=lambda msg, *a, **k: lines.append(msg))
    steps = smoke.steps(cfg.run_dir)
    assert len(steps) == 6
    tb = tensorboard_scalars(cfg.run_dir / "tensorboard")
    for col in ("loss", "adam_v_max", "grad_norm", "lr", "seqlen"):
        assert tb[f"gradvar/{col}"] == dict(zip(steps["step"], steps[col].astype(float))), col
    assert "gradvar/evals/val_loss" in tb
    (wb,) = cfg.run_dir.glob("wandb/offline-run-*/run-*.wandb")
    hist = [r for r in wandb_history(wb) if "gradvar/step" in r]
    assert [r["gradvar/step"] for r in hist] == steps["step"].tolist()
    assert [r["gradvar/loss"] for r in hist] == steps["loss"].tolist()
    assert any(ln.startswith("step ") for ln in lines)  # not a terminal here: the plain lines


def test_resumed_run_continues_its_wandb_run(smoke, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    over = {"log.wandb": "gradvar-test", "checkpoint.every": 3, "optim.max_steps": 3}
    cfg = smoke.cfg(tmp_path, "wb", over)
    smoke.train(cfg)
    smoke.train(smoke.cfg(tmp_path, "wb", {**over, "optim.max_steps": 6}), resume=True)
    runs = sorted(cfg.run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 2 and len({p.name for p in runs}) == 1  # one W&B run id, written in two parts
    steps = [sorted({r["gradvar/step"] for r in wandb_history(p) if "gradvar/step" in r}) for p in runs]
    assert steps == [[1, 2, 3], [4, 5, 6]]  # the evaluation at a checkpoint is a row of its own at its step


@pytest.mark.slow  # a `gradvar train` subprocess on a pseudo-terminal (about 20 s)
def test_train_draws_a_bar_on_a_terminal(smoke, tmp_path):
    out_fd, term_fd = pty.openpty()
    fcntl.ioctl(term_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    args = smoke.cli_args(tmp_path, "bar", "--log_every", "2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.cli", *args],
        stdin=term_fd,
        stdout=term_fd,
        stderr=term_fd,
        env=smoke.env(),
        close_fds=True,
    )
    os.close(term_fd)
    seen, deadline = b"", time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([out_fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(out_fd, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(out_fd)
    assert proc.wait(timeout=60) == 0
    text = seen.decode(errors="replace")
    assert "100%|" in text  # the bar ran to its end
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, [\d.]+k?tok/s", text)  # [elapsed<ETA, rate]
    assert "step     20 | loss" in text  # the log lines still come, above the bar
