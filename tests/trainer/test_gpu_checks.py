"""The GPU checks script cannot rot: every step of its GPU and dry-run plans is accepted by the script it calls,
the summary reads what the benchmarks write, and (slow) a dry run on CPU writes the numbers and files that
come back from the device machine."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path):
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


checks = load(ROOT / "scripts" / "gpu_checks.py")


@pytest.mark.parametrize("dry", [False, True])
def test_every_planned_step_parses(dry, tmp_path):
    study, *steps = checks.plan(dry, tmp_path / "numbers.jsonl", study_s=400)
    assert study.name.startswith("study") and study.cap_s == 400  # the study first, with its own cap
    assert [s.name.split(",")[0] for s in steps][:4] == [
        "syncs per step",
        "monitor cost",
        "monitor cost",
        "throughput and MFU",
    ]
    for step in steps[:4]:
        args = load(Path(step.argv[0])).build_parser().parse_args(step.argv[1:])
        assert args.json == str(tmp_path / "numbers.jsonl")
        assert args.preset == ("smoke" if dry else "gpt2-117m")
    k = [load(Path(s.argv[0])).build_parser().parse_args(s.argv[1:]).micro for s in steps[1:3]]
    assert k == [1, 4]
    assert steps[4].cuda_only and Path(steps[4].argv[0]).exists()  # the HF fp16 check
    study = study.argv
    assert study[:4] == ["-m", "study", "--preset", "smoke" if dry else "gpu-117m"]
    from study.presets import STUDIES

    assert study[3] in STUDIES


def test_summary_reads_the_benchmarks_records(tmp_path):
    numbers = tmp_path / "numbers.jsonl"
    recs = [
        {
            "check": "monitor_overhead",
            "k": 4,
            "batch": 32,
            "overhead": {"paper": 0.012, "full": 0.08},
            "peak_mb_added": {"paper": 475.0, "full": 950.0},
        },
        {"check": "mfu", "sides": {"+ compile (inductor)": {"tokens_per_s": 4.1e5, "mfu": 0.41}}},
        {"check": "sync_count", "syncs": {"trainer (paper, compile inductor)": {"per_step": 0.0}}},
    ]
    numbers.write_text("".join(json.dumps(r) + "\n" for r in recs))
    checks.summary(numbers, {"study gpu-117m": (0, 100.0)}, tmp_path, lambda line: None)
    text = (tmp_path / "summary.txt").read_text()
    assert "paper +1.2% (budget 2%), full +8.0%" in text
    assert "410,000 tok/s  MFU 41.0%" in text
    assert "trainer (paper, compile inductor) 0.0" in text


@pytest.mark.slow
def test_dry_run_writes_what_comes_back(tmp_path, data_cache):
    """One step end to end through the shell script, on CPU at smoke sizes: what comes back and its summary (the
    plan test covers the arguments of the others; the benchmarks' and the study's own tests cover those)."""
    out = tmp_path / "out"
    (tmp_path / "data_cache").symlink_to(data_cache)
    env = {
        **os.environ,
        "OUT": str(out),
        "GRADVAR_DRY_RUN": "1",
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    res = subprocess.run(
        ["bash", "scripts/gpu_checks.sh", "--only", "monitor cost, K = 4", "--work", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu.txt", "log.txt", "numbers.jsonl", "study.tar.gz", "summary.txt"]  # at most 8 come back
    recs = {r["check"]: r for r in map(json.loads, (out / "numbers.jsonl").read_text().splitlines())}
    rec = recs["monitor_overhead"]
    assert rec["k"] == 4 and set(rec["overhead"]) == {"paper", "paper_tb", "full"}
    assert set(rec["ms_per_step"]) == {"none", "paper", "paper_tb", "full", "none_b"} and "noise_floor" in rec
    assert "dry run" in (out / "log.txt").read_text()
    assert "monitor cost" in (out / "summary.txt").read_text()
