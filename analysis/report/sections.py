"""The report's sections after the summary: the runs, instability metrics, the method comparison, the signals,
sequence length, and the reproduction details."""

from __future__ import annotations

import shlex

import pandas as pd

from ..records.compare import summary_compact
from ..records.seqlen import HEADLINE_STAT, state_seqlen_finding
from .markdown import figure_md, fmt, md_table


def _command(cfg: dict) -> str:
    meta = cfg.get("meta") or {}
    for src in (meta, cfg):
        for key in ("command", "cmdline", "argv"):
            v = src.get(key)
            if v:
                return shlex.join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    return "(not recorded in config.json)"


def runs_table(runs, metrics: pd.DataFrame) -> pd.DataFrame:
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


def versions_table(runs) -> pd.DataFrame:
    vals: dict[str, set] = {}
    for r in runs:
        for k, v in (r.meta_config.get("versions") or {}).items():
            vals.setdefault(str(k), set()).add(str(v))
    return pd.DataFrame([{"package": k, "version": ", ".join(sorted(v))} for k, v in sorted(vals.items())])


def reproduce(runs) -> str:
    lines = ["```"]
    for r in runs:
        lines.append(f"# {r.name} (seed {fmt(r.seed)})".replace("\n", " "))
        lines.append(_command(r.config).replace("\n", " "))
    lines.append("```")
    return "\n".join(lines)


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


def md_metrics(res, figs) -> list[str]:
    return [
        "## Instability metrics",
        "",
        "Counts are spike *events*. `probe_*` columns use the fixed full-length held-out probe; compare "
        "methods on those (a short-sequence training loss is higher by construction).",
        "",
        md_table(res["metrics"], METRIC_COLS),
        "",
        *figure_md(figs["loss"]),
    ]


def md_compare(res, figs) -> list[str]:
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
        *figure_md(figs["compare"]),
    ]


def md_signals(res, figs) -> list[str]:
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
        *figure_md(figs["signals"]),
    ]


def md_seqlen(res, figs) -> list[str]:
    hyp, table = res["seqlen_hyp"], res["seqlen_table"]
    return [
        "## Gradient variance by sequence length",
        "",
        state_seqlen_finding(hyp[hyp["stat"] == HEADLINE_STAT] if len(hyp) else hyp),
        "",
        md_table(hyp),
        "",
        md_table(table[table["window"] != "all"], max_rows=60),
        "",
        *figure_md(figs["seqlen"]),
    ]
