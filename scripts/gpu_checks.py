"""The GPU checks in one go, inside a time budget: first the `gpu-117m` study with its own cap (a study resumes
where it stopped), then host-device syncs per step, the monitor's cost at K = 1 and K = 4 micro-batches, and
the trainer's throughput and MFU switch by switch against a bare loop, with the time left. Every number goes to
OUT/numbers.jsonl, every line printed to OUT/log.txt, a short table to OUT/summary.txt.

    bash scripts/gpu_checks.sh                              # on an H100/H200 (about 9 minutes)
    bash scripts/gpu_checks.sh --only study                 # the study alone
    GRADVAR_DRY_RUN=1 bash scripts/gpu_checks.sh            # on CPU: tiny sizes, CUDA-only parts skipped
    python scripts/gpu_checks.py --list                     # the plan: each step's command and time cap

Files in OUT: gpu.txt (chip, driver, versions), log.txt, numbers.jsonl, summary.txt, study.tar.gz (the study's
records without checkpoints, and its report).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


@dataclass
class Step:
    name: str
    argv: list
    """Arguments after the interpreter: a script path or ['-m', module], then its options."""
    cap_s: int
    """Time cap in seconds (always also cut at what the budget has left)."""
    cuda_only: bool = False
    """Skipped, with a printed line, on a dry run."""


def plan(dry: bool, numbers: Path, study_overrides=(), study_s: float = 420) -> list[Step]:
    """The steps in order, most wanted first: the study (its own cap), then the monitor's cost, then speed."""
    js = ["--json", str(numbers)]
    if dry:  # the smoke model (2 x 64, context 128), one round of three steps, aot_eager for the compiled sides
        model, big, small = ["--preset", "smoke"], ["--batch", "4"], ["--batch", "4"]
        short, mfu_extra, study = (
            ["--rounds", "1", "--steps", "3", "--warmup", "1"],
            ["--compile-backend", "aot_eager"],
            "smoke",
        )
        sync = []
    else:
        model, big, small = ["--preset", "gpt2-117m"], ["--batch", "32"], ["--batch", "16"]
        short, mfu_extra, study = ["--rounds", "3", "--steps", "8", "--warmup", "3"], [], "gpu-117m"
        sync = ["--steps", "4"]
    # one process: building the models twice would not fit the caps, and the build-order effect the default two
    # processes cancel was seen on CPU (the dry run's three steps per loop are too few to split anyway)
    split = ["--processes", "1"]
    study_step = Step(
        f"study {study}",
        [
            "-m",
            "study",
            "--preset",
            study,
            "--runs-dir",
            f"runs/study-{study}",
            "-o",
            f"reports/{study}",
            *(f"--{o}" for o in study_overrides),
        ],
        int(study_s),
    )
    return [
        study_step,
        Step("syncs per step", [str(BENCH / "sync_count.py"), *model, *big, "--micro", "2", *sync, *js], 150),
        Step(
            "monitor cost, K = 1",
            [str(BENCH / "monitor_overhead.py"), *model, *small, "--micro", "1", *short, *split, *js],
            120,
        ),
        Step(
            "monitor cost, K = 4",
            [str(BENCH / "monitor_overhead.py"), *model, *big, "--micro", "4", *short, *split, *js],
            140,
        ),
        Step(
            "throughput and MFU",
            [str(BENCH / "mfu.py"), *model, *big, *short[:4], *mfu_extra, *js]
            + (["--warmup", "31"] if not dry else ["--warmup", "1"]),
            200,
        ),
        Step("HF fp16 records", [str(ROOT / "scripts" / "gpu_hf_fp16.py")], 90, cuda_only=True),
    ]


def run_step(step: Step, cap: float, log, cwd: Path) -> tuple[int, float]:
    """Run one step with its output teed to the log; SIGTERM at the cap (a study's runs checkpoint on it)."""
    log(f"\n=== {step.name} (cap {cap:.0f} s): python {' '.join(step.argv)}")
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, *step.argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timer = _Timer(proc, cap)
    for line in proc.stdout:
        log(line.rstrip("\n"))
    rc = proc.wait()
    timer.cancel()
    took = time.monotonic() - start
    log(f"=== {step.name}: exit {rc} after {took:.0f} s" + (" (stopped at its cap)" if timer.fired else ""))
    return rc, took


class _Timer:
    """SIGTERM to the step's whole process group at the cap (the study's trainer children too), SIGKILL 30 s on."""

    def __init__(self, proc, cap):
        import threading

        self.fired, self._proc = False, proc
        self._t = threading.Timer(max(cap, 1), self._stop)
        self._t.daemon = True
        self._t.start()

    def _stop(self):
        import signal

        self.fired = True
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 0)):
            try:
                os.killpg(self._proc.pid, sig)
                self._proc.wait(timeout=wait or None)
                return
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue

    def cancel(self):
        self._t.cancel()


def environment(out: Path, log) -> None:
    lines = []
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        lines.append(f"nvidia-smi: {smi.stdout.strip() or smi.stderr.strip()}")
    except (OSError, subprocess.SubprocessError):
        lines.append("nvidia-smi: not found (no NVIDIA GPU here)")
    import torch
    import transformers

    lines.append(
        f"torch {torch.__version__}, transformers {transformers.__version__}, python {sys.version.split()[0]}, "
        f"cuda available: {torch.cuda.is_available()}"
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    lines.append(f"code: {commit.stdout.strip() or 'not a git checkout'}")
    (out / "gpu.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        log(line)


def pack_study(work: Path, study: str, out: Path, log) -> None:
    """Records, configs, logs and the report; no checkpoints (too large to come back, and a finished run's
    summary.json is what the next call needs to skip it)."""
    with tarfile.open(out / "study.tar.gz", "w:gz") as tar:
        for top in (work / "runs" / f"study-{study}", work / "reports" / study):
            if top.exists():
                tar.add(
                    top,
                    arcname=str(top.relative_to(work)),
                    filter=lambda info: None if "/checkpoints" in info.name else info,
                )
    log(f"packed {out / 'study.tar.gz'} ({(out / 'study.tar.gz').stat().st_size / 2**20:.1f} MiB)")


def summary(numbers: Path, took: dict, out: Path, log) -> None:
    rows = [f"{name:<24} {sec:6.0f} s  exit {rc}" for name, (rc, sec) in took.items()]
    for rec in (json.loads(line) for line in numbers.read_text().splitlines()) if numbers.exists() else ():
        if rec["check"] == "monitor_overhead":
            o, m = rec["overhead"], rec["peak_mb_added"]
            rows.append(
                f"monitor K={rec['k']} batch {rec['batch']}: paper {o['paper']:+.1%} (budget 2%), "
                f"full {o['full']:+.1%} (budget 10%), noise floor {rec.get('noise_floor', math.nan):+.1%}; "
                f"peak MB added paper {m['paper']:+.0f}, full {m['full']:+.0f}"
            )
        elif rec["check"] == "mfu":
            rows += [
                f"{side:<24} {v['tokens_per_s']:10,.0f} tok/s  MFU {v['mfu']:.1%}" for side, v in rec["sides"].items()
            ]
        elif rec["check"] == "sync_count":
            rows += [f"syncs/step {name:<32} {v['per_step']:.1f}" for name, v in rec["syncs"].items()]
    (out / "summary.txt").write_text("\n".join(rows) + "\n")
    log("\n" + "\n".join(rows))


def dry_work(args) -> Path:
    if args.work or not args.dry_run:
        return Path(args.work or ROOT).resolve()
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="gradvar-dry-"))
    (ROOT / "data_cache").mkdir(exist_ok=True)
    (work / "data_cache").symlink_to(ROOT / "data_cache")
    return work


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "out-gpu"), help="where the files go (default $OUT)")
    p.add_argument(
        "--work",
        help="folder for data_cache/, runs/ and reports/ (default: the repo; a temporary "
        "folder on a dry run, its data_cache linked to the repo's)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=float(os.environ.get("GRADVAR_GPU_BUDGET_S", "540")),
        help="seconds for everything (default 540); the study runs first, the checks get what it leaves",
    )
    p.add_argument(
        "--study-s",
        type=float,
        default=float(os.environ.get("GRADVAR_GPU_STUDY_S", "420")),
        help="the study's cap in seconds (default 420; gpu-117m needs about 390 on an H100)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=os.environ.get("GRADVAR_DRY_RUN") == "1",
        help="CPU rehearsal: smoke sizes, CUDA-only parts skipped (also GRADVAR_DRY_RUN=1)",
    )
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument(
        "--study-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config field for every study run (e.g. model.compile=off); repeatable",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only the steps whose names start so (e.g. 'study')")
    args = p.parse_args(argv)
    out, work = Path(args.out).resolve(), dry_work(args)
    numbers = out / "numbers.jsonl"
    steps = plan(args.dry_run, numbers, args.study_override, args.study_s)
    if args.dry_run:  # a loaded CPU is slower than the GPU the caps are sized for; the budget still binds
        for s in steps:
            s.cap_s *= 3
    study = steps[0].argv[3]
    if args.only:
        steps = [s for s in steps if s.name.startswith(tuple(args.only))]
    if args.list:
        for s in steps:
            print(f"{s.name:<22} cap {s.cap_s}: python {' '.join(s.argv)}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    numbers.unlink(missing_ok=True)
    logf = open(out / "log.txt", "a")  # noqa: SIM115 (open for the whole run, every step appends)

    def log(line: str) -> None:
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    start = time.monotonic()
    if args.dry_run:
        log("dry run (GRADVAR_DRY_RUN=1): smoke model, one round of three steps; syncs skipped without CUDA")
    environment(out, log)
    took = {}
    for step in steps:
        left = args.budget - (time.monotonic() - start) - 15  # 15 s kept for packing and the summary
        cap = min(step.cap_s, left)
        if step.cuda_only and args.dry_run:
            log(f"\n=== {step.name}: skipped on a dry run (needs CUDA)")
            continue
        if cap < 30:
            log(f"\n=== {step.name}: skipped, {left:.0f} s of the budget left; run the script again to continue")
            continue
        took[step.name] = run_step(step, cap, log, work)
    pack_study(work, study, out, log)
    summary(numbers, took, out, log)
    log(f"total {time.monotonic() - start:.0f} s of a {args.budget:.0f} s budget")
    return 0 if all(rc == 0 for rc, _ in took.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
