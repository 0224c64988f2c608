"""`gradvar report RUN_DIR [RUN_DIR ...] -o reports/NAME [--title T]`: report.md + figures + report.html.

The findings come first (what was run, what was found, with numbers, beside the paper's claims); tables,
figures, reproduction details and method notes follow. report.html is self-contained (figures embedded as
base64) and is rendered from the markdown by analysis.md_html (markdown-it-py, raw HTML off), so names from
paths and configs reach the page as escaped text and can never inject markup.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .compare import claims_table, compare, summary_compact
from .correlate import ALARM_Q, HORIZON, MAX_BLOCKS, N_BOOT, N_BOOT_GROUPS, WINDOW, aligned, analyze_runs, ranking
from .figures import (
    fig_adam_variance,
    fig_lag,
    fig_loss,
    fig_seqlen_heatmap,
    fig_signal_scatter,
    fig_slw_schedule,
    fig_stability_grid,
    fig_val_loss,
    save_png,
)
from .load import NotARunDirError, Run, concat, is_run_dir, load_runs
from .md_html import markdown_to_html
from .metrics import DEFAULT_RULE, RECOVER_FACTOR
from .seqlen import probe_variance_by_length, seqlen_hypothesis, state_seqlen_finding

MAX_RUN_FIGURES = 12


# --- markdown helpers ----------------------------------------------------------------------------------------


def fmt(v) -> str:
    """Compact cell text: 4 significant digits, '–' for missing."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "inf" if np.isinf(v) else f"{float(v):.4g}"
    return str(v)


def md_cell(v, fmt=fmt) -> str:
    return fmt(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(
    df: pd.DataFrame,
    cols=None,
    max_rows: int | None = None,
    *,
    cell=fmt,
    empty: str = "_(no data)_",
    more: str = "_({} more rows not shown)_",
) -> str:
    """A markdown table; `cell` formats each value (then escaped), `more` says how many rows were cut."""
    if df is None or not len(df):
        return empty
    cols = [c for c in (cols or df.columns) if c in df.columns]
    d = df[cols] if max_rows is None else df[cols].head(max_rows)
    lines = ["| " + " | ".join(md_cell(c, cell) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(md_cell(v, cell) for v in row) + " |" for row in d.itertuples(index=False)]
    if max_rows is not None and len(df) > max_rows:
        lines.append("\n" + more.format(len(df) - max_rows))
    return "\n".join(lines)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "run"


# --- analysis ------------------------------------------------------------------------------------------------


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
    res["seqlen_table"] = probe_variance_by_length(probes, last_steps=last)
    res["seqlen_hyp"] = pd.concat(
        [
            seqlen_hypothesis(probes, stat, last_steps=last)
            for stat in ("adam_v_max_if_applied", "grad_trace_sigma", "grad_trace_sigma_per_token")
        ],
        ignore_index=True,
    )
    res["claims"] = claims_table(res["compare"], res["ranking"], res["seqlen_hyp"])
    return res


# --- the findings, in words ----------------------------------------------------------------------------------

METHOD_NOTES = [
    f"- Loss ratio r_t = L_t / min_(s<t) L_s. Ratio spike: r_t > {DEFAULT_RULE.ratio_threshold} and a rise of at "
    f"least {DEFAULT_RULE.min_rise} nats; z spike: L_t > mean + {DEFAULT_RULE.z_k}·std of the previous "
    f"{DEFAULT_RULE.z_window} losses; non-finite losses always count. Consecutive flagged steps are one event "
    "(gradvar.spikes, shared with the live monitor).",
    f"- Time to recover: steps from an event's start until the loss is below {RECOVER_FACTOR} × its pre-spike minimum.",
    "- Run class: diverged (non-finite, or ends above the ratio threshold), spiky (spikes, recovered), stable.",
    "- Correlations: Pearson and Spearman over finite pairs; p-values assume independent pairs (optimistic for "
    f"autocorrelated series); 95% intervals from a non-overlapping block bootstrap ({N_BOOT} resamples, "
    f"{N_BOOT_GROUPS} for per-group variants; block length max(n^(1/3), n/{MAX_BLOCKS}), blocks never straddle "
    "runs; Spearman resamples reuse the full-sample ranks). Lags −k..k: lag > 0 means the signal leads.",
    f"- Early warning: alarm when the signal exceeds the {ALARM_Q} quantile of its previous {WINDOW} values; "
    f"positive when a spike event starts within the next {HORIZON} steps; steps inside spikes excluded. AUROC "
    "of the score x / quantile − 1; precision per alarm step; recall per spike event; lead = event start − "
    "first alarm. `lrm` uses the median of the same previous window.",
    "- Sequence length: early = first 25% of a run's steps, late = last 25%. Under SLW, training-step lengths are "
    "confounded with time; the probe (same step, same sequences, truncated) is the controlled comparison.",
]


def _by_method(per_run: pd.DataFrame, col: str) -> str:
    parts = []
    for method, g in per_run.groupby("method", sort=True):
        v = pd.to_numeric(g[col], errors="coerce").dropna()
        if len(v):
            parts.append(f"{method} {v.median():.3g}" + (f" [{v.min():.3g}–{v.max():.3g}]" if len(v) > 1 else ""))
    return "; ".join(parts) or "–"


def summary_lines(runs, res) -> list[str]:
    """What was run and what was found, with numbers; negative results said plainly."""
    per_run = res["compare"]["per_run"]
    methods = per_run["method"].value_counts().sort_index()
    uniq = lambda col: ", ".join(fmt(v) for v in sorted(per_run[col].dropna().unique()))  # noqa: E731
    machines = sorted({str(r.meta_config.get("machine")) for r in runs if r.meta_config.get("machine")})
    arms = ", ".join(f"{m} ×{n}" for m, n in methods.items())
    lines = [
        f"**What was run:** {len(runs)} run{'s' if len(runs) != 1 else ''} ({arms}); seeds "
        f"{uniq('seed') or '–'}; batch sizes {uniq('batch_size') or '–'}; peak LRs {uniq('lr') or '–'}; up to "
        f"{fmt(per_run['last_step'].max())} steps and {fmt(per_run['tokens'].max())} tokens"
        + (f"; machine: {', '.join(machines)}" if machines else "")
        + "."
    ]
    src = "probe" if (per_run["probe_n_points"] > 0).all() else "training"
    col = "probe_spike_events" if src == "probe" else "spike_events"
    lines.append(
        f"**Spike events ({src} loss), median [range] over runs:** {_by_method(per_run, col)}. Max "
        f"{src} loss ratio: {_by_method(per_run, 'probe_max_loss_ratio' if src == 'probe' else 'max_loss_ratio')}."
    )
    lines.append(
        f"**Final validation loss:** {_by_method(per_run, 'final_val_loss')} (perplexity "
        f"{_by_method(per_run, 'final_val_ppl')}). Tokens to target {fmt(per_run['target_val_loss'].iloc[0])}: "
        f"{_by_method(per_run, 'tokens_to_target')}; wall time: {_by_method(per_run, 'time_to_target_s')} s."
    )
    rank = res["ranking"]
    if len(rank):
        best = [
            (what, r.iloc[0])
            for what, r in (("whole model", rank[rank["group"] == "all"]), ("per group", rank[rank["group"] != "all"]))
            if len(r)
        ]
        lines.append(
            "**Best signal for the loss ratio** (pooled Spearman ρ, 95% CI): "
            + "; ".join(
                f"{what}: {t['signal']} ({t['transform']}) ρ = {t['spearman_r']:+.2f} [{t['spearman_lo']:+.2f}, "
                f"{t['spearman_hi']:+.2f}], best lag {fmt(t.get('best_lag'))}, "
                f"early-warning AUROC {fmt(t.get('auroc'))}"
                for what, t in best
            )
            + "."
        )
    hyp = res["seqlen_hyp"]
    lines.append(state_seqlen_finding(hyp[hyp["stat"] == "adam_v_max_if_applied"]))
    claims = res["claims"]
    neg = claims[claims["verdict"].str.startswith(("not supported", "contradicted"))]
    if len(neg):
        lines.append(
            "**Not reproduced here:** " + "; ".join(f"{r.claim} — {r.verdict}" for r in neg.itertuples()) + "."
        )
    ok = claims[claims["verdict"].str.contains("supported") & ~claims["verdict"].str.startswith("not")]
    if len(ok):
        lines.append("**Reproduced here:** " + "; ".join(f"{r.claim} — {r.verdict}" for r in ok.itertuples()) + ".")
    return lines


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
                f"loss_{_slug(run.name)}.png",
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


# --- reproduction details ------------------------------------------------------------------------------------


def _command(cfg: dict) -> str:
    meta = cfg.get("meta") or {}
    for src in (meta, cfg):
        for key in ("command", "cmdline", "argv"):
            v = src.get(key)
            if v:
                return shlex.join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    return "(not recorded in config.json)"


def _runs_table(runs, metrics: pd.DataFrame) -> pd.DataFrame:
    m = metrics.set_index("run")
    rows = []
    for r in runs:
        meta = r.meta_config
        rows.append(
            {
                "run": r.name,
                "method": r.method,
                "seed": r.seed,
                "batch_size": r.batch_size,
                "lr": r.lr,
                "steps": m.loc[r.name, "last_step"],
                "tokens": m.loc[r.name, "tokens"],
                "wall_time_s": m.loc[r.name, "wall_time_s"],
                "world_size": meta.get("world_size"),
                "machine": meta.get("machine"),
                "git_commit": str(meta.get("git_commit") or "")[:12],
                "events": _event_kinds(r.events),
                "path": str(r.path),
            }
        )
    return pd.DataFrame(rows)


def _event_kinds(events: pd.DataFrame) -> str:
    """'spike 2, resume 1': what happened in the run besides routine checkpoints and notes."""
    if not len(events) or "kind" not in events:
        return ""
    counts = events.loc[~events["kind"].isin(["checkpoint", "note"]), "kind"].astype(str).value_counts().sort_index()
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _versions_table(runs) -> pd.DataFrame:
    vals: dict[str, set] = {}
    for r in runs:
        for k, v in (r.meta_config.get("versions") or {}).items():
            vals.setdefault(str(k), set()).add(str(v))
    return pd.DataFrame([{"package": k, "version": ", ".join(sorted(v))} for k, v in sorted(vals.items())])


def _reproduce(runs) -> str:
    lines = ["```"]
    for r in runs:
        lines.append(f"# {r.name} (seed {fmt(r.seed)})".replace("\n", " "))
        lines.append(_command(r.config).replace("\n", " "))
    lines.append("```")
    return "\n".join(lines)


# --- the document --------------------------------------------------------------------------------------------


def _figure_md(items) -> list[str]:
    # Captions carry run names: keep brackets, asterisks and backticks out of the markup (intra-word
    # underscores are literal in CommonMark, which markdown_to_html renders).
    clean = [(re.sub(r"[\[\]()*`]", " ", cap), name) for cap, name in items]
    return [f"![{cap}]({name})\n\nFigure: {cap}\n" for cap, name in clean]


RANK_COLS = [
    "rank",
    "signal",
    "transform",
    "n",
    "pearson_r",
    "pearson_lo",
    "pearson_hi",
    "spearman_r",
    "spearman_lo",
    "spearman_hi",
    "spearman_p",
    "best_lag",
    "r_at_best_lag",
    "auroc",
    "precision",
    "recall",
    "median_lead",
]
METRIC_COLS = [
    "run",
    "method",
    "seed",
    "spike_events",
    "ratio_spike_events",
    "z_spike_events",
    "max_loss_ratio",
    "median_time_to_recover",
    "unrecovered_events",
    "run_class",
    "probe_spike_events",
    "probe_max_loss_ratio",
    "probe_run_class",
]


def _md_metrics(res, figs) -> list[str]:
    return [
        "## Instability metrics",
        "",
        "Counts are spike *events*. `probe_*` columns use the fixed full-length held-out probe; compare "
        "methods on those (a short-sequence training loss is higher by construction).",
        "",
        md_table(res["metrics"], METRIC_COLS),
        "",
        *_figure_md(figs["loss"]),
    ]


def _md_compare(res, figs) -> list[str]:
    cmp = res["compare"]
    target = fmt(cmp["per_run"]["target_val_loss"].iloc[0]) if len(cmp["per_run"]) else "–"
    return [
        "## Baseline versus SLW",
        "",
        "Medians over seeds, with [min, max] as the spread.",
        "",
        md_table(summary_compact(cmp["summary"])),
        "",
        f"Target validation loss: {target} (default: the worst of the methods' best validation losses).",
        "",
        md_table(cmp["target"]),
        "",
        "### Stability grid",
        "",
        md_table(cmp["grid"]),
        "",
        *_figure_md(figs["compare"]),
    ]


def _md_signals(res, figs) -> list[str]:
    rank, ew = res["ranking"], res["corr"]["early_warning"]
    whole = rank[rank["group"] == "all"] if len(rank) else rank
    per_group = rank[rank["group"] != "all"] if len(rank) else rank
    ew = ew[ew["group"] == "all"] if len(ew) else ew
    return [
        "## Gradient-variance signals against the loss ratio",
        "",
        "Pooled over runs, ranked by |Spearman r|; intervals: 95% non-overlapping block bootstrap. "
        "`raw` = level, `dlog` = step-to-step change of log, `lrm` = log ratio to the rolling median.",
        "",
        md_table(whole, RANK_COLS),
        "",
        "### Against the probe loss ratio (whole-model signals)",
        "",
        "Same statistics at the probe evaluations only (fewer points; comparable between methods).",
        "",
        md_table(res["ranking_probe"], RANK_COLS),
        "",
        "### Per-group variants (strongest 15)",
        "",
        "Many groups x stats x transforms: expect some strong correlations by chance; read the intervals.",
        "",
        md_table(per_group, RANK_COLS, max_rows=15),
        "",
        "### Early warning per run (whole-model signals)",
        "",
        md_table(
            ew, ["run", "signal", "auroc", "precision", "recall", "median_lead", "n_events", "n_alarms"], max_rows=60
        ),
        "",
        *_figure_md(figs["signals"]),
    ]


def _md_seqlen(res, figs) -> list[str]:
    hyp, table = res["seqlen_hyp"], res["seqlen_table"]
    return [
        "## Gradient variance by sequence length",
        "",
        state_seqlen_finding(hyp[hyp["stat"] == "adam_v_max_if_applied"] if len(hyp) else hyp),
        "",
        md_table(hyp),
        "",
        md_table(table[table["window"] != "all"], max_rows=60),
        "",
        *_figure_md(figs["seqlen"]),
    ]


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
    out += [
        "",
        "### The paper's claims beside this study",
        "",
        md_table(res["claims"]),
        "",
        "## Runs",
        "",
        md_table(_runs_table(runs, res["metrics"])),
        "",
    ]
    out += _md_metrics(res, figs) + _md_compare(res, figs) + _md_signals(res, figs) + _md_seqlen(res, figs)
    for section in extra_sections or []:
        out += ["", section.strip(), ""]
    out += [
        "## Reproduce",
        "",
        _reproduce(runs),
        "",
        "### Library versions",
        "",
        md_table(_versions_table(runs)),
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
    title = title or f"gradvar report: {', '.join(r.name for r in runs[:4])}{' …' if len(runs) > 4 else ''}"
    title = " ".join(str(title).split())  # one line: it is a markdown heading
    md = build_markdown(runs, res, figs, title, extra_sections, lead_sections)
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(markdown_to_html(md, out, title), encoding="utf-8")
    return out / "report.md"


# --- command line --------------------------------------------------------------------------------------------


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the report arguments to `parser` (the `gradvar report` subparser, or a standalone one)."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (each with records/)")
    parser.add_argument("-o", "--out", required=True, help="output folder, e.g. reports/NAME")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument(
        "--target", type=float, default=None, help="target validation loss (default: the worst of the methods' best)"
    )
    parser.set_defaults(func=main_report)
    return parser


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


if __name__ == "__main__":
    sys.exit(main_report(add_report_arguments(argparse.ArgumentParser(prog="gradvar report")).parse_args()))
