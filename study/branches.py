"""The study's causal 2 x 2 branches: after the grid, each run of the source group is branched at each
checkpoint step into four arms (study/branch.py), which are then trained like grid runs. Arms that exist
are not rewritten, so a rerun continues where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

from .grid import Grid, RunSpec, is_complete, run_all

FOLDER = "branches"


def branch_arms(study, out_root: Path) -> list[dict]:
    """Make (if missing) every arm directory of the study's branches; one record per arm."""
    from .branch import branch_plan, make_branches

    b = study.branches
    records = []
    for spec in study.runs:
        source = out_root / spec.name
        if spec.group != b["from"] or not is_complete(source):
            continue
        seed = spec.overrides.get("seed", 0)
        for step in b["steps"]:
            plan = branch_plan(source, step, out_root / FOLDER)
            if not all((d / "config.json").exists() for d in plan.values()):
                plan = make_branches(source, step, out_root / FOLDER, b["short"], b["steps_each"])
            for arm, d in plan.items():
                records.append(
                    {"dir": f"{FOLDER}/{d.name}", "source": spec.name, "seed": seed, "step": step, "arm": arm}
                )
    return records


def run_branches(study, out_root: Path, jobs: int) -> list[dict]:
    """Branch, train the arms, and record them in study.json under "branches"."""
    records = branch_arms(study, out_root)
    if not records:
        return []
    grid = Grid(
        f"{study.name} branches", study.preset, [RunSpec(Path(r["dir"]).name, {}, r["arm"]) for r in records], jobs
    )
    run_all(grid, out_root / FOLDER, jobs)
    manifest_path = out_root / "study.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["branches"] = [{**r, "short": study.branches["short"]} for r in records]
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return records
