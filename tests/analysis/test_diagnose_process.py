"""`gradvar diagnose` as a process: no torch, a quiet end when its reader leaves, a report in seconds."""

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[1] / "data" / "real_logs"
ROOT = Path(__file__).resolve().parents[2]


def run(code: str, *args, **kw):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, **kw)


def test_help_and_diagnosis_with_report_import_no_torch(tmp_path):
    code = (
        "import sys\nfrom analysis.diagnosis.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert main([sys.argv[1], '-o', sys.argv[2]]) == 0\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\nprint('ok')"
    )
    p = run(code, str(DATA / "megatron_bigscience_gpt2_ds-off.out"), str(tmp_path / "r"))
    assert p.returncode == 0 and p.stdout.rstrip().endswith("ok"), p.stderr
    assert "usage: gradvar diagnose" in p.stdout and (tmp_path / "r" / "report.html").exists()


def test_pipe_closed_early_ends_without_traceback():
    cmd = (
        f"{sys.executable} -m analysis.diagnosis.cli {DATA / 'megatron_bigscience_gpt2_ds-off.out'} --json | head -c 10"
    )
    p = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], cwd=ROOT, capture_output=True, text=True)
    assert len(p.stdout) == 10 and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert p.returncode == 0, p.stderr


def test_100k_entry_csv_with_report_under_10_s(tmp_path):
    # The Lightning log's 2814 real losses tiled to 100k entries (a long per-step log), one NaN at the end.
    real = pd.read_csv(DATA / "lightning_slm_metrics.csv")["train_loss_step"].dropna().to_numpy()
    loss = np.resize(real, 100_000)
    loss[-5:] = np.nan
    csv = tmp_path / "long.csv"
    pd.DataFrame({"step": np.arange(1, 100_001), "loss": loss, "lr": 3e-4}).to_csv(csv, index=False, na_rep="nan")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(
        [sys.executable, "-m", "analysis.diagnosis.cli", str(csv), "-o", str(tmp_path / "r")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the command itself: the wall time on a shared 2-core machine measures the neighbours too.
    took = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert p.returncode == 0, p.stderr
    assert "diverged" in p.stdout and (tmp_path / "r" / "report.html").exists()
    assert took < 10, took
