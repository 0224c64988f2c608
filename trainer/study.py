"""`gradvar study`: run the baseline/SLW grid with gradvar records, then write the report.

    gradvar study --preset quick -o reports/quick          # < 10 min on 2 CPU cores (the README's main job)
    gradvar study --preset cpu -o reports/cpu              # the full CPU study, < 90 min on 2 cores
    gradvar study --preset gpu-117m -o reports/gpu-117m    # GPT-2 117M on one H100/H200, ~10 min

Every run is a `gradvar train` subprocess (one thread each, `--jobs` side by side). A finished run (its
summary.json exists) is skipped and an interrupted one resumes from its checkpoint, so an interrupted
study continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .live import Progress


@dataclass
class RunSpec:
    name: str
    overrides: dict
    group: str
    """Runs that differ only by seed share a group (medians and spread are taken over it)."""
    role: str = "grid"
    """grid, sweep (the LR sweep) or control."""
    labels: dict = field(default_factory=dict)


@dataclass
class Study:
    name: str
    preset: str
    """The trainer preset every run starts from."""
    runs: list
    jobs: int = 2
    description: str = ""
    primary: dict = field(default_factory=dict)
    """The main comparison: {"baseline": group, "slw": group}; every group at that batch and LR joins it."""


def run_dir(out_root: Path, spec: RunSpec) -> Path:
    return out_root / spec.name


def is_complete(path: Path) -> bool:
    return (path / "summary.json").exists()


def command(study: Study, spec: RunSpec, out_root: Path) -> list[str]:
    path = run_dir(out_root, spec)
    cmd = [sys.executable, "-m", "trainer.cli"]
    if (path / "checkpoints").is_dir() and any((path / "checkpoints").iterdir()):
        return cmd + ["--resume", str(path)]
    cmd += ["--preset", study.preset, "--name", spec.name, "--out_dir", str(out_root)]
    for key, value in spec.overrides.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
    return cmd


def run_all(study: Study, out_root: Path, jobs: int, log=print) -> list[Path]:
    """Run every missing run, `jobs` at a time; returns the run directories in spec order."""
    out_root.mkdir(parents=True, exist_ok=True)
    todo = [s for s in study.runs if not is_complete(run_dir(out_root, s))]
    n, done, started, finished_here = len(study.runs), len(study.runs) - len(todo), time.time(), 0
    log(f"study {study.name}: {n} runs, {done} already complete, {len(todo)} to run, {jobs} at a time")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    running: list[tuple[RunSpec, subprocess.Popen]] = []
    failed = []
    bar = Progress(n, unit="run", desc=f"study {study.name}", initial=done, log=log)  # a bar on a terminal
    log = bar.write
    while todo or running:
        while todo and len(running) < jobs:
            spec = todo.pop(0)
            path = run_dir(out_root, spec)
            path.mkdir(parents=True, exist_ok=True)
            with open(path / "log.txt", "a") as logf:
                proc = subprocess.Popen(command(study, spec, out_root), stdout=logf, stderr=subprocess.STDOUT, env=env)
            running.append((spec, proc))
        time.sleep(1.0)
        for spec, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((spec, proc))
            done, finished_here = done + 1, finished_here + 1
            if proc.returncode != 0 or not is_complete(run_dir(out_root, spec)):
                failed.append(spec.name)
                log(f"  run {spec.name} failed (exit {proc.returncode}); see {run_dir(out_root, spec) / 'log.txt'}")
            elapsed = time.time() - started
            eta = elapsed / finished_here * (len(todo) + len(running))  # wall time per finished run so far
            bar.update_to(done)
            log(f"  run {done} of {n} done: {spec.name} | elapsed {elapsed / 60:.1f} min | ETA {eta / 60:.1f} min")
    bar.close()
    if failed:
        log(f"{len(failed)} runs failed: {', '.join(failed)}; rerun the same command to retry them")
    return [run_dir(out_root, s) for s in study.runs if is_complete(run_dir(out_root, s))]


def write_manifest(study: Study, out_root: Path) -> None:
    out_root.mkdir(parents=True, exist_ok=True)
    manifest = {"study": study.name, "preset": study.preset, "description": study.description,
                "primary": study.primary,
                "runs": [{"name": s.name, "group": s.group, "role": s.role, "labels": s.labels,
                          "overrides": s.overrides} for s in study.runs]}
    (out_root / "study.json").write_text(json.dumps(manifest, indent=2))


def main_study(args) -> int:
    from .study_presets import STUDIES

    if args.preset not in STUDIES:
        print(f"gradvar study: error: unknown study preset {args.preset!r}; choose one of {', '.join(STUDIES)}",
              file=sys.stderr)
        return 2
    study = STUDIES[args.preset]()
    for item in args.override or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"gradvar study: error: --override takes KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        for spec in study.runs:
            spec.overrides[key] = value
    lead = None
    if args.lead:
        try:
            lead = Path(args.lead).read_text().splitlines()
        except OSError as e:
            print(f"gradvar study: error: cannot read --lead {args.lead}: {e.strerror}", file=sys.stderr)
            return 2
    out_root = Path(args.runs_dir or f"runs/study-{study.name}")
    write_manifest(study, out_root)
    if args.list:
        for s in study.runs:
            print(s.name, " ".join(command(study, s, out_root)[3:]))
        return 0
    run_dirs = run_all(study, out_root, args.jobs or study.jobs)
    if not run_dirs:
        print("gradvar study: error: no run finished", file=sys.stderr)
        return 1
    from analysis.study_report import write_study_report

    path = write_study_report(out_root, Path(args.output or f"reports/{study.name}"), command_line=_command_line(),
                              extra_lead=lead)
    print(f"report written: {path}")
    return 0 if len(run_dirs) == len(study.runs) else 1


def _command_line() -> str:
    """How this study was started, as a user would type it (not the interpreter's path to the script)."""
    prog = "gradvar" if Path(sys.argv[0]).name == "gradvar" else "python -m trainer.study"
    args = sys.argv[1:]
    if prog == "python -m trainer.study" and args[:1] == ["study"]:
        args = args[1:]
    return " ".join([prog, *map(shlex.quote, args)])


def register(sub) -> None:
    from .study_presets import STUDIES

    p = sub.add_parser("study", help="run the baseline/SLW study grid and write its report")
    p.add_argument("--preset", default="quick", help=f"study preset: {', '.join(STUDIES)}")
    p.add_argument("-o", "--output", help="report folder (default reports/<preset>)")
    p.add_argument("--runs-dir", help="where the runs go (default runs/study-<preset>)")
    p.add_argument("--jobs", type=int, help="runs side by side (default: the preset's, 2 on CPU)")
    p.add_argument("--list", action="store_true", help="print the runs and their commands, run nothing")
    p.add_argument("--lead", metavar="FILE", help="markdown put first in the report: findings written after "
                   "reading the generated report (rerunning a finished study only rewrites the report)")
    p.add_argument("--override", action="append", metavar="KEY=VALUE",
                   help="set a config field in every run (e.g. data.source=my_corpus.txt); repeatable")
    p.set_defaults(func=main_study)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gradvar study")
    sub = parser.add_subparsers()
    register(sub)
    return main_study(parser.parse_args(["study", *(argv or sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
