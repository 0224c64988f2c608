"""Bad files: truncated or corrupted checkpoints (reported, and resume falls back to the previous good one),
truncated or corrupted records parts (reported, every readable row returned), and a full disk (simulated
with RLIMIT_FSIZE: a clear CheckpointError / RecordsWriteError, and no half-written file where a good one was).
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import signal
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import gradvar
from gradvar.records import RecordsWriteError, RecordWriter
from trainer import checkpoint as ckpt
from trainer import cli


@pytest.fixture
def ref_copy(smoke_reference, tmp_path):
    """A copy of the reference run (checkpoints at steps 10 and 20)."""
    run_dir = tmp_path / "ref"
    shutil.copytree(smoke_reference.run_dir, run_dir)
    return run_dir


def newest(run_dir):
    return ckpt.list_checkpoints(run_dir)[-1][1]


def truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_bytes(path, where: float = 0.6):
    """Bit rot inside the tensor data: the zip structure stays valid (torch.load alone would not notice)."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i : i + 8] = bytes(b ^ 0x5A for b in data[i : i + 8])
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize(
    "damage",
    [truncate, flip_bytes, lambda p: p.write_bytes(b""), lambda p: p.write_bytes(b"PK\x03\x04junk")],
    ids=["truncated", "flipped-bytes", "empty", "garbage"],
)
def test_damaged_newest_checkpoint_falls_back(ref_copy, damage):
    damage(newest(ref_copy))
    said = []
    state, path = ckpt.load_latest(ref_copy, log=said.append)
    assert state["step"] == 10 and path.name == "step-000000010.pt"
    assert len(said) == 1 and "step-000000020.pt is unreadable" in said[0] and "trying the previous one" in said[0]


def test_resume_past_a_truncated_checkpoint_is_exact(smoke, smoke_reference, ref_copy, capsys):
    truncate(newest(ref_copy))
    assert cli.main(["--resume", str(ref_copy)]) == 0
    out = capsys.readouterr().out
    assert "step-000000020.pt is unreadable" in out and "at step 10" in out
    steps = smoke.steps(ref_copy)
    assert list(steps["step"]) == list(range(1, 21))
    assert np.array_equal(steps["loss"], smoke_reference.steps["loss"])
    assert ckpt.load_latest(ref_copy, log=print)[0]["step"] == 20  # rewritten whole


def test_no_readable_checkpoint_is_a_clear_error(ref_copy, capsys):
    for _, path in ckpt.list_checkpoints(ref_copy):
        truncate(path, 0.3)
    with pytest.raises(ckpt.CheckpointError, match="no readable checkpoint among 2"):
        ckpt.load_latest(ref_copy, log=lambda *a: None)
    assert cli.main(["--resume", str(ref_copy)]) == 1
    err = capsys.readouterr().err
    assert "gradvar train: error:" in err and "no readable checkpoint among 2" in err and "Traceback" not in err


def test_checkpoints_without_a_checksum_still_load(ref_copy):
    """Runs written before the SHA-256 sidecars existed load as before (unverified)."""
    for side in (ref_copy / "checkpoints").glob("*.sha256"):
        side.unlink()
    assert ckpt.load_latest(ref_copy, log=lambda *a: None)[0]["step"] == 20


# ------------------------------------------------------------------------------------------ records
@pytest.mark.parametrize(
    "damage", [truncate, lambda p: p.write_bytes(b"PAR1 not really")], ids=["truncated", "garbage"]
)
def test_damaged_records_part_is_reported_and_the_rest_returned(ref_copy, damage):
    parts = sorted((ref_copy / "records" / "steps").glob("L*.parquet"))
    good = gradvar.read_records(ref_copy, ["steps"])["steps"]
    lost = pd.read_parquet(parts[1])["step"].tolist()
    damage(parts[1])
    errors = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps = gradvar.read_records(ref_copy, ["steps"], errors=errors)["steps"]
    assert len(errors) == 1 and parts[1].name in errors[0] and "unreadable records part skipped" in errors[0]
    assert any(parts[1].name in str(w.message) for w in caught)
    assert list(steps["step"]) == [s for s in good["step"] if s not in lost]  # every readable row
    assert set(lost) and not set(lost) & set(steps["step"])


def test_resume_over_a_damaged_records_part(smoke, ref_copy):
    """A resumed writer skips the unreadable part (it cannot keep its rows) and goes on writing."""
    parts = sorted((ref_copy / "records" / "steps").glob("L*.parquet"))
    truncate(parts[-1])
    w = RecordWriter(ref_copy, resume_step=20)
    w.append("steps", {"step": 21, "tokens": 0, "seqlen": 128, "loss": 1.0})
    w.flush()
    errors = []
    with pytest.warns(UserWarning, match="unreadable records part skipped"):
        steps = smoke.steps(ref_copy, errors=errors)
    assert len(errors) == 1 and steps["step"].iloc[-1] == 21


# ------------------------------------------------------------------------------------------ full disk
@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """RLIMIT_FSIZE for this process (writes past it fail with EFBIG; SIGXFSZ ignored), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def test_full_disk_checkpoint_keeps_the_previous_one(tmp_path):
    good = ckpt.save(tmp_path, 1, {"w": torch.ones(10)})
    before = good.read_bytes()
    with file_size_limit(200_000), pytest.raises(ckpt.CheckpointError) as info:
        ckpt.save(tmp_path, 2, {"w": torch.randn(200_000)})  # 800 kB of float32
    msg = str(info.value)
    assert "could not write checkpoint" in msg and "step-000000002.pt" in msg
    assert "the previous checkpoints are intact" in msg
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-000000001.pt", "step-000000001.pt.sha256"]
    assert good.read_bytes() == before and ckpt.load_latest(tmp_path, log=print)[0]["w"].sum() == 10
    with file_size_limit(200_000), pytest.raises(ckpt.CheckpointError):  # same name: the good file stays
        ckpt.save(tmp_path, 1, {"w": torch.randn(200_000)})
    assert good.read_bytes() == before


def test_full_disk_records_keep_rows_buffered(tmp_path):
    w = RecordWriter(tmp_path)
    w.append("steps", [{"step": i, "loss": 1.0} for i in range(1, 6)])
    w.flush()
    rng = np.random.default_rng(0)
    w.append("steps", [{"step": i, "loss": float(rng.random())} for i in range(6, 50_006)])  # ~400 kB of noise
    too_large = r"could not write .*steps/L0-\d+\.parquet: .*File too large"
    with file_size_limit(100_000), pytest.raises(RecordsWriteError, match=too_large):
        w.flush()
    assert w.pending() == 50_000  # nothing lost: the rows wait for the next flush
    assert [p.name for p in (tmp_path / "records" / "steps").iterdir()] == ["L0-0000000001.parquet"]  # no partial part
    w.flush()
    assert list(gradvar.read_records(tmp_path, ["steps"])["steps"]["step"]) == list(range(1, 50_006))


def _limit_fsize():  # preexec_fn for the child: a 1 MB file size limit, SIGXFSZ ignored (inherited by exec)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))


@pytest.mark.slow
def test_trainer_on_a_full_disk_exits_clearly(smoke, tmp_path):
    """The smoke checkpoints (~3 MB) do not fit under a 1 MB limit; records and config do. A run resumed
    from step 10 fails at step 20's checkpoint with a one-line error, and step 10's stays intact."""
    cfg = smoke.cfg(tmp_path, "run", {"optim.max_steps": 10})
    smoke.train(cfg)
    good = newest(cfg.run_dir)
    before = good.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "--resume", str(cfg.run_dir), "--optim.max_steps", "20"],
        env=smoke.env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_fsize,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gradvar train: error: could not write checkpoint") and "step-000000020.pt" in last
    assert "Traceback" not in proc.stderr
    assert [s for s, _ in ckpt.list_checkpoints(cfg.run_dir)] == [10] and good.read_bytes() == before
    assert not list(cfg.run_dir.joinpath("checkpoints").glob(".*tmp*"))
    assert list(smoke.steps(cfg.run_dir)["step"]) == list(range(1, 21))  # records were flushed first
