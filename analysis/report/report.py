"""A report of gradvar runs: report.md, its figures and report.html, from run directories (`gradvar report`).

The findings come first (what was run, what was found, with numbers); tables, figures, reproduction details
and method notes follow.
report.html is self-contained (figures embedded as base64) and is rendered from the markdown by
analysis.report.md_html (markdown-it-py, raw HTML off), so names from paths and configs reach the page as
escaped text and can never inject markup.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..records.compare import compare
from ..records.correlate import N_BOOT
from ..records.load import NotARunDirError, Run, concat, is_run_dir, load_runs
from ..records.ranking import aligned, analyze_runs, ranking
from ..records.seqlen import HYPOTHESIS_STATS, probe_variance_by_length, seqlen_hypothesis, warmup_by_run
from .attribution_section import attribution_section
from .figure_style import save_png
from .figures import (
    fig_adam_variance,
    fig_lag,
    fig_loss,
    fig_seqlen_heatmap,
    fig_signal_scatter,
    fig_slw_schedule,
    fig_stability_grid,
    fig_val_loss,
)
from .markdown import md_table, slug
from .md_html import markdown_to_html
from .sections import md_compare, md_metrics, md_seqlen, md_signals, reproduce, runs_table, versions_table
from .summary import METHOD_NOTES, summary_lines

MAX_RUN_FIGURES = 12


def analyze(runs, target=None, n_boot: int = N_BOOT) -> dict:
    """Every table the report shows."""
    cmp = compare(runs, target)
    res = {"metrics": cmp["per_run"], "compare": cmp}  # one row per run: run_metrics plus the comparison columns
    res["corr"] = analyze_runs(runs, source="train", n_boot=n_boot)
    res["ranking"] = ranking(res["corr"])
    # The probe loss ratio is the one comparable across methods (SLW's short-sequence losses are not).
    probe_corr = analyze_runs(runs, source="probe", groups=False, n_boot=n_boot)
    res["ranking_probe"] = ranking(probe_corr) if len(probe_corr["correlations"]) else pd.DataFrame()
    probes = concat(runs, "probes")
    last = {r.name: int(r.steps["step"].max()) for r in runs if len(r.steps)}
    res["probes"] = probes
    warm = warmup_by_run(runs)
    res["seqlen_table"] = probe_variance_by_length(probes, last_steps=last, warmup_steps=warm)
    res["seqlen_hyp"] = pd.concat(
        [seqlen_hypothesis(probes, stat, last_steps=last, warmup_steps=warm) for stat in HYPOTHESIS_STATS],
        ignore_index=True,
    )
    return res


def _figures(runs, res, out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Write the PNGs; returns section -> [(caption, file name)]."""
    figs: dict[str, list] = {"loss": [], "signals": [], "seqlen": [], "compare": []}

    def save(section, caption, fig, name):
        save_png(fig, out_dir / name)
        figs[section].append((caption, name))

    for run in sorted(runs, key=lambda r: (r.method, r.name))[:MAX_RUN_FIGURES]:
        if len(run.steps):
            save(
                "loss",
                f"Loss and loss ratio: {run.name}",
                fig_loss(run.steps, title=f"{run.name} ({run.method})"),
                f"loss_{slug(run.name)}.png",
            )
    steps = concat(runs, "steps")
    if len(steps) and "adam_v_max" in steps:
        save("signals", "Adam variance state beside the loss ratio", fig_adam_variance(steps), "adam_variance.png")
    rank = res["ranking"]
    if len(rank):
        top = (rank[rank["group"] == "all"] if (rank["group"] == "all").any() else rank).iloc[0]
        ratio = res["metrics"].set_index("run")["max_loss_ratio"].replace(np.inf, np.nan).fillna(0.0)
        run = max(runs, key=lambda r: ratio.get(r.name, 0.0))  # the most unstable run shows the most
        d = aligned(run, top["signal"], top["transform"])
        save(
            "signals",
            f"Top signal vs loss ratio ({run.name})",
            fig_signal_scatter(d, label=f"{top['signal']} ({top['transform']})"),
            "scatter_top_signal.png",
        )
        save("signals", "Lagged correlation", fig_lag(res["corr"]["lags"]), "lags.png")
    if len(res["probes"]):
        save(
            "seqlen",
            "Adam variance max if applied, by probe length",
            fig_seqlen_heatmap(res["probes"]),
            "seqlen_heatmap.png",
        )
    if len(steps):
        save("seqlen", "Sequence length schedule", fig_slw_schedule(steps, _schedule(runs)), "slw_schedule.png")
    evals = concat(runs, "evals")
    if len(evals):
        save("compare", "Validation loss vs tokens and wall time", fig_val_loss(evals), "val_loss.png")
    if len(res["compare"]["grid"]):
        save("compare", "Stability grid", fig_stability_grid(res["compare"]["grid"]), "stability_grid.png")
    return figs


def _schedule(runs):
    """The SLW schedule of the first SLW run, rebuilt from its config with gradvar.slw (None if impossible)."""
    for run in runs:
        slw = run.slw
        if not slw.get("enabled"):
            continue
        fields = {
            k: slw[k]
            for k in ("schedule_type", "min_seqlen", "total_steps", "difficulty_step", "root_degree")
            if k in slw
        }
        fields["max_seqlen"] = int(
            slw.get("max_seqlen")
            or (run.config.get("optim") or {}).get("seq_len")
            or (run.config.get("model") or {}).get("n_positions")
            or 0
        )
        if slw.get("difficulties"):
            fields.update(difficulties=tuple(slw["difficulties"]), max_steps=tuple(slw.get("max_steps") or ()))
        from gradvar.slw import SLWSchedule  # torch: only for a study report with an SLW run, never for diagnose

        try:
            return SLWSchedule(**fields)
        except (TypeError, ValueError):
            return None
    return None


def build_markdown(runs, res, figs, title: str, extra_sections=None, lead_sections=None) -> str:
    """The whole report: findings first, then tables and figures, extra sections, reproduction, notes."""
    n = len(runs)
    out = [
        f"# {title}",
        "",
        f"_Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `gradvar report` "
        f"from {n} run director{'y' if n == 1 else 'ies'}._",
        "",
    ]
    for section in lead_sections or []:
        out += [section.strip(), ""]
    out += ["## Summary", ""]
    out += [f"- {line}" for line in summary_lines(runs, res)]
    out += ["", "## Runs", "", md_table(runs_table(runs, res["metrics"])), ""]
    out += md_metrics(res, figs) + md_compare(res, figs) + md_signals(res, figs) + md_seqlen(res, figs)
    for section in extra_sections or []:
        out += ["", section.strip(), ""]
    out += [
        "## Reproduce",
        "",
        reproduce(runs),
        "",
        "### Library versions",
        "",
        md_table(versions_table(runs)),
        "",
        "## Method notes",
        "",
        *METHOD_NOTES,
    ]
    return "\n".join(out) + "\n"


def write_report(
    run_dirs,
    out_dir,
    title: str | None = None,
    extra_sections=None,
    target=None,
    n_boot: int = N_BOOT,
    lead_sections=None,
) -> Path:
    """Analyse the runs (directories, or Run objects already loaded), write out_dir/report.md (+ PNGs) and
    out_dir/report.html; returns report.md. lead_sections go before the summary, extra_sections after
    the analysis."""
    runs = [r for r in run_dirs if isinstance(r, Run)] or load_runs(run_dirs)
    if not runs:
        raise ValueError("no run directories given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = analyze(runs, target, n_boot)
    figs = _figures(runs, res, out)
    moved_first = attribution_section(runs, out)
    extra_sections = [*(extra_sections or []), *([moved_first] if moved_first else [])]
    title = title or f"gradvar report: {', '.join(r.name for r in runs[:4])}{' …' if len(runs) > 4 else ''}"
    title = " ".join(str(title).split())  # one line: it is a markdown heading
    md = build_markdown(runs, res, figs, title, extra_sections, lead_sections)
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(markdown_to_html(md, out, title), encoding="utf-8")
    return out / "report.md"


def main_report(args) -> int:
    """Run `gradvar report`; a bad path or a failure is one line on stderr, never a traceback."""
    for p in args.run_dirs:
        if not is_run_dir(p):
            print(f"gradvar report: error: {p} is not a run directory (no records/ folder)", file=sys.stderr)
            return 2
    try:
        path = write_report(args.run_dirs, args.out, title=args.title, target=getattr(args, "target", None))
    except NotARunDirError as exc:
        print(f"gradvar report: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a report must fail with a sentence, not a stack
        print(f"gradvar report: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0
