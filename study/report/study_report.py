"""The study report. An LR grid (every arm at two or more peak LRs) gets the layout of
analysis.report.lr_layout: pre-registered rules and their verdicts. Other grids get per-setting comparisons
(medians and spread over seeds), the LR sweep, the controls, then the full analysis of the primary
comparison (gradvar report) with the findings on its first screen.

Reads only what `gradvar study` left on disk: runs_root/study.json (groups, roles, labels) and the runs.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.records.compare import compare_runs, default_target, stability_grid
from analysis.records.load import load_runs
from analysis.report.figure_style import save_png
from analysis.report.figures import fig_stability_grid
from analysis.report.markdown import md_table
from analysis.report.report import write_report

from ..stats.lr_grid import grid_rows, is_lr_grid

COLS = {
    "probe_spike_events": "probe spike events",
    "probe_max_loss_ratio": "max probe loss ratio",
    "spike_events": "train spike events",
    "final_val_loss": "final val loss",
    "tokens_to_target": "tokens to target",
    "time_to_target_s": "time to target (s)",
}


def _spread(v: pd.Series, digits: int = 3) -> str:
    v = pd.to_numeric(v, errors="coerce")
    ok = v[np.isfinite(v)]
    if ok.empty:
        return "–" if v.empty else f"not reached ({len(v)})"
    med = f"{ok.median():.{digits}g}"
    missing = f", {len(v) - len(ok)} not reached" if len(ok) < len(v) else ""
    return med if len(ok) == 1 and not missing else f"{med} [{ok.min():.{digits}g}–{ok.max():.{digits}g}{missing}]"


def _label(group: str) -> str:
    """Method label of a group: its name without the LR suffix ('slw8-T90-lr1e-1' -> 'slw8-T90')."""
    return group.rsplit("-lr", 1)[0]


def relabel(runs, manifest: dict) -> None:
    """Set each run's method to its group's label ('baseline' and 'slw' for the primary pair)."""
    specs = {r["name"]: r for r in manifest["runs"]}
    primary = {v: k for k, v in (manifest.get("primary") or {}).items()}
    for run in runs:
        group = specs.get(run.path.name, {}).get("group", run.name)
        run.method = primary.get(group, _label(group))
        for df in (run.steps, run.layers, run.probes, run.events, run.evals):
            if df is not None and "method" in df:
                df["method"] = run.method


def setting_table(runs, target: float) -> pd.DataFrame:
    """One row per method in a (batch, LR) setting: medians [min–max] over seeds."""
    per_run = compare_runs(runs, target)  # its method column is each run's (relabelled) method
    rows = []
    for method, g in per_run.groupby("method", sort=False):
        row = {
            "method": method,
            "seeds": len(g),
            "class": ", ".join(f"{k} {v}" for k, v in g["class"].value_counts().items()),
        }
        row.update({label: _spread(g[col]) if col in g else "–" for col, label in COLS.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def settings(runs) -> dict:
    out: dict = {}
    for r in runs:
        out.setdefault((r.batch_size, r.lr), []).append(r)
    return out


def findings(runs, manifest: dict) -> tuple[list[str], list[str]]:
    """(lead markdown lines, per-setting sections)."""
    lead, sections = ["## Study findings", ""], []
    for (batch, lr), group in sorted(settings(runs).items(), key=lambda kv: (kv[0][0], kv[0][1])):
        target = default_target(group)
        table = setting_table(group, target)
        sections += [
            f"### Batch {batch:g}, peak LR {lr:g}",
            "",
            f"Target validation loss for the cost columns: {target:.3f} (the worst of the methods' best).",
            "",
            md_table(table),
            "",
        ]
        if len(table) > 1:
            lead.append(
                f"- **Batch {batch:g}, LR {lr:g}:** "
                + "; ".join(
                    f"{row['method']}: probe spike events {row['probe spike events']}, "
                    f"final val {row['final val loss']}, "
                    f"tokens to {target:.2f} {row['tokens to target']}"
                    for _, row in table.iterrows()
                )
                + "."
            )
    sweep = [r for r in runs if _role(manifest, r) == "sweep"]
    if sweep:
        t = setting_table_sweep(sweep)
        sections += ["### LR sweep (baseline, larger batch)", "", md_table(t), ""]
        lead.append(
            "- **LR sweep (baseline, larger batch):** "
            + "; ".join(
                f"LR {row['peak LR']}: {row['class']} (probe spike events {row['probe spike events']}, max probe loss "
                f"ratio {row['max probe loss ratio']})"
                for _, row in t.iterrows()
            )
            + "."
        )
    return lead, sections


def _role(manifest, run) -> str:
    return {r["name"]: r["role"] for r in manifest["runs"]}.get(run.path.name, "grid")


def setting_table_sweep(runs) -> pd.DataFrame:
    """One row per peak LR of the sweep: run classes over seeds, medians [min–max] of the instability columns."""
    per_run = compare_runs(runs)
    rows = []
    for (batch, lr), g in per_run.groupby(["batch_size", "lr"], sort=True):
        classes = g["class"].value_counts()
        row = {
            "batch": batch,
            "peak LR": f"{lr:g}",
            "seeds": len(g),
            "class": ", ".join(f"{k} {v}/{len(g)}" for k, v in classes.items()),
        }
        keep = ("probe_spike_events", "probe_max_loss_ratio", "spike_events", "final_val_loss")
        row.update({COLS[c]: _spread(g[c]) for c in keep if c in g})
        rows.append(row)
    return pd.DataFrame(rows)


def grid_runs(runs, manifest: dict) -> list:
    """The paper's two methods over every (batch, LR) of the study, for the study-level stability grid.

    Baseline: the runs labelled baseline with the primary baseline's LR warmup (a reference with a longer
    warmup is another recipe). SLW: the runs labelled slw, but at the primary setting only the primary SLW
    group (the other SLW variants there have their own rows in the setting tables)."""
    specs = {r["name"]: r for r in manifest["runs"]}
    primary = manifest.get("primary") or {}

    def warmup(run):
        return (run.config.get("optim") or {}).get("warmup_steps")

    base = [r for r in runs if specs.get(r.path.name, {}).get("group") == primary.get("baseline")]
    if not base:
        return []
    setting = (base[0].batch_size, base[0].lr)
    out = []
    for r in runs:
        spec = specs.get(r.path.name, {})
        family, group = spec.get("labels", {}).get("method"), spec.get("group")
        if family == "baseline" and warmup(r) == warmup(base[0]):
            out.append((r, "baseline"))
        elif family == "slw" and ((r.batch_size, r.lr) != setting or group == primary.get("slw")):
            out.append((r, "slw"))
    return out


def stability_figure(runs, manifest: dict, out_dir: Path) -> list[str]:
    """study_stability_grid.png: baseline and SLW over the study's (batch, LR) settings; its markdown."""
    chosen = grid_runs(runs, manifest)
    if not chosen:
        return []
    per_run = compare_runs([r for r, _ in chosen])
    per_run["method"] = [family for _, family in chosen]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_png(fig_stability_grid(stability_grid(per_run)), Path(out_dir) / "study_stability_grid.png")
    return [
        "### Stability grid of the study: baseline and SLW at every batch and LR",
        "",
        "![Stability grid of the study](study_stability_grid.png)",
        "",
        "Figure: majority class per (batch, peak LR) over seeds, with stable/spiky/diverged seed counts and the "
        "median number of probe spike events. Baseline runs share the primary baseline's LR warmup; at the "
        "primary setting SLW is the primary SLW group.",
        "",
    ]


def _machine_lines(runs, manifest, command_line: str) -> list[str]:
    cfg = runs[0].config
    versions = (cfg.get("meta") or {}).get("versions", {})
    return [
        "## How this was run",
        "",
        f"- Command: `{command_line or 'gradvar study --preset ' + manifest['study']}` "
        f"(runs in `{runs[0].path.parent}`; an interrupted study resumes where it stopped).",
        f"- Study `{manifest['study']}`: {manifest.get('description', '')}; trainer preset `{manifest['preset']}`; "
        f"{len(runs)} runs, seeds {sorted({r.seed for r in runs})}.",
        f"- Machine: {platform.machine()} {platform.system()}, device {(cfg.get('meta') or {}).get('device', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        "",
    ]


def tune_section(runs_root: Path, runs) -> list[str]:
    """The tune-slw result (runs_root/tune-slw, if it was run) beside the grid's SLW durations."""
    path = runs_root / "tune-slw" / "tune.json"
    if not path.exists():
        return []
    res = json.loads(path.read_text())
    walls = [
        json.loads(p.read_text()).get("wall_time_s", np.nan) for p in (runs_root / "tune-slw").glob("*/summary.json")
    ]
    base = [r for r in runs if r.method == "baseline"]
    full = (
        np.nanmedian([json.loads((r.path / "summary.json").read_text())["wall_time_s"] for r in base])
        if base
        else np.nan
    )
    ev = res["evidence"][-1]["fluctuation"]
    lines = [
        "### tune-slw (the paper's low-cost rule) against the grid",
        "",
        f"Trials of {res['horizon_steps']} steps per candidate T; significant = validation perplexity rising "
        f"more than {res['tol']:.0%} between consecutive evaluations.",
        "",
        "| T | largest ppl rise |",
        "|---|---|",
    ]
    lines += [f"| {t} | {'diverged' if not np.isfinite(f) else f'{f:+.1%}'} |" for t, f in ev.items()]
    cost = np.nansum(walls) / full if np.isfinite(full) and full > 0 else np.nan
    chosen = (
        f"start length {res['start']}, T = {res['T']}"
        if res["T"] is not None
        else f"none: every T fluctuated by more than {res['tol']:.0%} (the rule's answer is to lower the peak LR "
        f"or lengthen the LR warmup)"
    )
    lines += [
        "",
        f"Chosen: {chosen}. Cost: {np.nansum(walls):.0f} s of trials, "
        f"{cost:.2f} of one full baseline run's wall time ({full:.0f} s).",
        "",
    ]
    return lines


def write_study_report(
    runs_root, out_dir, command_line: str = "", extra_lead: list[str] | None = None, extra_claims=None
) -> Path:
    """The LR-grid layout (analysis.report.lr_layout) when every arm ran at two or more peak LRs, else the
    per-setting layout. extra_claims: Claim-like dicts (claim, rule, measured, verdict, why) for the LR
    grid's claims table."""
    runs_root = Path(runs_root)
    manifest = json.loads((runs_root / "study.json").read_text())
    names = [r["name"] for r in manifest["runs"] if (runs_root / r["name"] / "summary.json").exists()]
    runs = load_runs([runs_root / n for n in names])
    relabel(runs, manifest)
    rows = grid_rows(runs)
    if is_lr_grid(rows):
        from .lr_layout import write_lr_report

        kw = {"command_line": command_line, "extra_lead": extra_lead, "extra_claims": extra_claims}
        return write_lr_report(runs_root, out_dir, manifest, runs, rows, **kw)
    lead, sections = findings(runs, manifest)
    primary = manifest.get("primary") or {}
    base = next((r for r in runs if r.method == "baseline" and primary), None)
    main = [r for r in runs if base is not None and (r.batch_size, r.lr) == (base.batch_size, base.lr)] or runs
    lead += [
        "",
        f"The analysis below (correlations, sequence length, figures) covers the primary comparison: "
        f"the {len(main)} runs at batch {main[0].batch_size:g} and peak LR {main[0].lr:g} "
        f"('baseline' = {primary.get('baseline', '?')}, 'slw' = {primary.get('slw', '?')}).",
        "",
    ]
    lead = [*(extra_lead or []), "", *lead]
    grid = stability_figure(runs, manifest, out_dir)
    extra = [
        "## All settings",
        "",
        *grid,
        *sections,
        *tune_section(runs_root, runs),
        *_machine_lines(runs, manifest, command_line),
    ]
    title = f"gradvar study '{manifest['study']}': training instability, gradient variance and SLW"
    return write_report(
        main, out_dir, title=title, extra_sections=["\n".join(extra)], lead_sections=["\n".join(lead)], claims=True
    )
