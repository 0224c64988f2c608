"""The study report of an LR grid (every arm at two or more peak LRs): the design, the findings (claims
table), the decision rules, then the figures and tables, the paper's numbers, reproduction, and an appendix
with the full gradvar report of the primary pair."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pandas as pd

from analysis.report.figure_style import save_png
from analysis.report.markdown import fmt, md_table
from analysis.report.md_html import render_file
from analysis.report.sections import reproduce, versions_table

from ..stats.lr_grid import arm_outcomes, noise_margin, paired
from .lr_figures import fig_loss_vs_lr, fig_paired_effects, fig_spike_window
from .lr_rules import as_row, evaluate, rules_md

PAPER_NUMBERS = (
    ("GPT-2: stable training with 8x larger batch and 4x larger LR", "abstract"),
    ("GPT-3 125M: stable training with 8x larger batch and 40x larger LR", "abstract"),
    ("up to 2.2x fewer tokens and 3.7x less wall time to the same or better quality", "abstract"),
    ("GPT-3 125M: 99% of the zero-shot accuracy with 10x less data and 17x less time", "abstract"),
    ("any other number attributed to the paper (its body, tables and figures)", "not verified"),
)
RUN_COLS = [
    "run",
    "arm",
    "lr",
    "seed",
    "final_val_loss",
    "peak_ratio",
    "excess_area",
    "tokens",
    "epochs",
    "early_adam_vhat_max",
    "early_adam_vhat_l1",
    "early_adam_v_max",
    "early_adam_v_l1",
    "vhat_l1_cap_frac",
    "at_clip_cap",
    "wall_time_s",
    "note",
]


def design_paragraph(rows: pd.DataFrame, manifest: dict) -> str:
    lrs = sorted(rows["lr"].unique())
    seeds = sorted(int(s) for s in rows["seed"].unique())
    tok = rows["tokens"]
    epochs = rows["epochs"].dropna()
    ep = f"{fmt(epochs.min())}-{fmt(epochs.max())}" if len(epochs) else "not recorded (NaN: no summary.json 'epochs')"
    return (
        f"{manifest.get('description', '')}. Grid: arms {', '.join(dict.fromkeys(rows['arm']))} x peak LRs "
        f"{', '.join(f'{x:g}' for x in lrs)} ({fmt(lrs[-1] / lrs[0])}x range) x seeds {seeds}, paired (seed s "
        f"gives every arm the same initialisation and data order); {len(rows)} runs. Budget: {fmt(tok.min())}-"
        f"{fmt(tok.max())} tokens seen per run (SLW and its control round to whole steps); epochs {ep}."
    )


def findings_md(claims) -> list[str]:
    table = pd.DataFrame(
        [
            {
                "claim": r["claim"],
                "source": r["source"],
                "verdict": f"{r['verdict']}: {r['why']}",
                "measured": r["measured"],
            }
            for r in map(as_row, claims)
        ]
    )
    return ["## Findings", "", md_table(table), ""]


def _figure(out_dir: Path, name: str, made) -> list[str]:
    if made is None:
        return []
    fig, caption = made
    save_png(fig, out_dir / name)
    return [f"![{name}]({name})", "", f"Figure: {caption}", ""]


def figures_md(runs, rows: pd.DataFrame, m: float, out_dir: Path) -> list[str]:
    return [
        "## Figures",
        "",
        *_figure(out_dir, "lr_final_loss.png", fig_loss_vs_lr(rows, m)),
        *_figure(out_dir, "lr_paired_effects.png", fig_paired_effects(rows)),
        *_figure(out_dir, "lr_spike_window.png", fig_spike_window(runs, rows)),
    ]


def tables_md(rows: pd.DataFrame, outcomes: pd.DataFrame, corr: pd.DataFrame, m: float, m_note: str) -> list[str]:
    diffs = [paired(rows, "slw", a) for a in dict.fromkeys(rows["arm"]) if a != "slw" and "slw" in set(rows["arm"])]
    diff = pd.concat(diffs, ignore_index=True) if diffs else pd.DataFrame()
    cols = ["a", "b", "lr", "seed", "d_final_val_loss", "d_excess_area"]
    return [
        "## Tables",
        "",
        f"Noise margin m = {fmt(m)} ({m_note}).",
        "",
        "### LR outcomes per arm and seed",
        "",
        md_table(outcomes),
        "",
        "### Seed-paired differences (a - b)",
        "",
        md_table(diff, cols),
        "",
        "### C5: early Adam variance state against the peak probe loss ratio (Spearman over runs)",
        "",
        md_table(corr),
        "",
        "### Runs",
        "",
        "Early = steps <= 3 x the run's LR warmup. With grad clip c the bias-corrected v has L1 <= c^2 and max "
        "<= c^2; vhat_l1_cap_frac is the early L1 over c^2, and at_clip_cap marks runs within 5% of the cap.",
        "",
        md_table(rows, RUN_COLS),
        "",
    ]


def paper_md() -> list[str]:
    table = pd.DataFrame([{"the paper's number": n, "source": s} for n, s in PAPER_NUMBERS])
    return [
        "## The paper's numbers",
        "",
        "Li, Zhang & He (2022), as labelled by where they are stated.",
        "",
        md_table(table),
        "",
    ]


def reproduce_md(runs, manifest: dict, command_line: str) -> list[str]:
    versions = (runs[0].config.get("meta") or {}).get("versions", {})
    return [
        "## How this was run",
        "",
        f"- Command: `{command_line or 'gradvar study --preset ' + manifest['study']}` (runs in "
        f"`{runs[0].path.parent}`; an interrupted study resumes where it stopped).",
        f"- Seeds {sorted({r.seed for r in runs})}; trainer preset `{manifest['preset']}`; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        "",
        reproduce(runs),
        "",
        md_table(versions_table(runs)),
        "",
    ]


def appendix_md(runs, manifest: dict, out_dir: Path) -> list[str]:
    """The full gradvar report of the primary pair in out_dir/primary (a few runs: cheap)."""
    from analysis.report.report import write_report

    groups = {r["name"]: r["group"] for r in manifest["runs"]}
    primary = set((manifest.get("primary") or {}).values())
    chosen = [r for r in runs if groups.get(r.path.name) in primary]
    if not chosen:
        return []
    write_report(chosen, out_dir / "primary", title=f"gradvar report: the primary pair of '{manifest['study']}'")
    return [
        "## Appendix: the full gradvar report of the primary pair",
        "",
        f"[primary/report.md](primary/report.md): {len(chosen)} runs ({', '.join(sorted(primary))}).",
        "",
    ]


def _causal(runs_root: Path, out_dir: Path, manifest: dict) -> tuple[list[str], list]:
    """C6 from analysis.report.causal_section when that module exists and the study ran branches."""
    if not manifest.get("branches"):
        return [], []
    try:
        from .causal_section import causal_section
    except ImportError:
        return [], []
    lines, claim = causal_section(runs_root, out_dir)
    return list(lines), [claim] if claim else []


def write_lr_report(runs_root, out_dir, manifest: dict, runs, rows: pd.DataFrame, **kw) -> Path:
    """report.md and report.html of an LR grid; kw: command_line, extra_lead, extra_claims, n_boot."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m, m_note = noise_margin(rows)
    outcomes = arm_outcomes(rows)
    claims, corr = evaluate(rows, outcomes, m, kw.get("n_boot", 2000))
    causal_lines, causal_claims = _causal(Path(runs_root), out_dir, manifest)
    extra = [*causal_claims, *(kw.get("extra_claims") or [])]  # claims whose rules RULES does not hold
    claims = [*claims, *extra]
    title = f"gradvar study '{manifest['study']}': LR sensitivity of the baseline, SLW and their controls"
    md = [
        f"# {title}",
        "",
        f"_Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `gradvar study` from {len(runs)} runs._",
        "",
        *(kw.get("extra_lead") or []),
        "",
        design_paragraph(rows, manifest),
        "",
        *findings_md(claims),
        *rules_md(extra),
        *figures_md(runs, rows, m, out_dir),
        *causal_lines,
        *tables_md(rows, outcomes, corr, m, m_note),
        *paper_md(),
        *reproduce_md(runs, manifest, kw.get("command_line", "")),
        *appendix_md(runs, manifest, out_dir),
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    render_file(path)
    return path
