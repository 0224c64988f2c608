"""Figures: each `fig_<name>(df, ...) -> matplotlib.figure.Figure`, built without pyplot (no global state,
nothing shown), in the style of analysis.report.figure_style.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from gradvar.spikes import loss_ratio  # noqa: E402

from ..records.correlate import correlation  # noqa: E402
from ..records.metrics import DEFAULT_RULE, spike_flags  # noqa: E402
from ..records.seqlen import HEADLINE_STAT  # noqa: E402
from .figure_style import PALETTE, by_run, legend, line, styles  # noqa: E402


def fig_loss(steps: pd.DataFrame, rule=DEFAULT_RULE, title: str | None = None) -> Figure:
    """Training loss (and probe loss) with spike starts marked, and the loss ratio with its threshold."""
    fig = Figure(figsize=(8, 5.5))
    ax_loss, ax_ratio = fig.subplots(2, 1, sharex=True)
    runs = by_run(steps)
    for (label, g), st in zip(runs, styles(len(runs))):
        step, loss = g["step"].to_numpy(), g["loss"].to_numpy(np.float64)
        line(ax_loss, step, loss, st, f"{label} train")
        if "probe_loss" in g and g["probe_loss"].notna().any():
            p = g[g["probe_loss"].notna()]
            ax_loss.plot(
                p["step"],
                p["probe_loss"],
                color=st["color"],
                linestyle="none",
                marker=st["marker"],
                markerfacecolor="none",
                markersize=4,
                label=f"{label} probe",
            )
        flags = spike_flags(loss, rule)["any"]
        starts = flags & ~np.concatenate([[False], flags[:-1]])
        # Non-finite spike starts are drawn at the top of the finite range so they stay visible.
        top = np.max(loss[np.isfinite(loss)]) if np.isfinite(loss).any() else 0.0
        fin = np.where(np.isfinite(loss), loss, top)
        ax_loss.plot(
            step[starts],
            fin[starts],
            linestyle="none",
            marker="x",
            color="black",
            markersize=7,
            label=f"{label} spike start" if starts.any() else None,
        )
        ratio = loss_ratio(loss)
        line(ax_ratio, step, np.where(np.isfinite(ratio), ratio, np.nan), st, label)
    ax_ratio.axhline(
        rule.ratio_threshold, color="grey", linestyle="--", linewidth=0.8, label=f"threshold {rule.ratio_threshold}"
    )
    ax_loss.set_ylabel("loss (nats)")
    ax_ratio.set_ylabel("loss ratio  L_t / min_{s<t} L_s")
    ax_ratio.set_xlabel("optimizer step")
    legend(ax_loss, len(runs))
    legend(ax_ratio, len(runs))
    ax_loss.set_title(title or "Loss with spike events (x = first step of an event)")
    return fig


def fig_adam_variance(steps: pd.DataFrame, title: str | None = None) -> Figure:
    """Adam variance max and L1 (log scale) over steps, above the loss ratio."""
    fig = Figure(figsize=(8, 7))
    axes = fig.subplots(3, 1, sharex=True)
    runs = by_run(steps)
    for (label, g), st in zip(runs, styles(len(runs))):
        step = g["step"].to_numpy()
        for ax, col in zip(axes[:2], ("adam_v_max", "adam_v_l1")):
            if col in g and g[col].notna().any():
                line(ax, step, g[col].to_numpy(np.float64), st, label)
        r = loss_ratio(g["loss"].to_numpy(np.float64))
        line(axes[2], step, np.where(np.isfinite(r), r, np.nan), st, label)
    for ax, name in zip(axes, ("Adam v max", "Adam v L1 (Σ v)", "loss ratio")):
        ax.set_ylabel(name)
    for ax in axes[:2]:
        if any(line.get_ydata().size for line in ax.get_lines()):
            ax.set_yscale("log")
    axes[2].set_xlabel("optimizer step")
    legend(axes[0], len(runs))
    axes[0].set_title(title or "Adam second-moment state beside the loss ratio")
    return fig


def fig_signal_scatter(
    df: pd.DataFrame, x: str = "value", y: str = "loss_ratio", label: str | None = None, max_points: int = 20000
) -> Figure:
    """Scatter of a signal against the loss ratio; Pearson and Spearman r (all finite pairs) in the title."""
    d = df[[x, y]].replace([np.inf, -np.inf], np.nan).dropna()
    a, b = d[x].to_numpy(np.float64), d[y].to_numpy(np.float64)
    c = correlation(a, b, n_boot=0)
    pr, sr = c["pearson_r"], c["spearman_r"]
    if len(d) > max_points:
        d = d.sample(max_points, random_state=0)
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    ax.scatter(d[x], d[y], s=6, alpha=0.4, color=PALETTE[0], marker="o", rasterized=len(d) > 2000)
    ax.set_xlabel(label or x)
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title(
        f"{label or x} vs {y.replace('_', ' ')}\nPearson r = {pr:+.2f}, Spearman ρ = {sr:+.2f}, n = {len(a)}",
        fontsize=9,
    )
    return fig


def fig_lag(lags: pd.DataFrame, run: str = "pooled", top: int = 6) -> Figure:
    """Correlation with the loss ratio against lag (lag > 0: the signal leads) for the strongest signals."""
    d = lags[lags["run"] == run] if "run" in lags and (lags["run"] == run).any() else lags
    d = d.assign(key=d["signal"] + " (" + d["transform"] + ")")
    strength = d.groupby("key")["r"].apply(lambda r: r.abs().max()).sort_values(ascending=False)
    keys = list(strength.index[:top])
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for key, st in zip(keys, styles(len(keys))):
        g = d[d["key"] == key].sort_values("lag")
        ax.plot(
            g["lag"], g["r"], label=key, color=st["color"], linestyle=st["linestyle"], marker=st["marker"], markersize=4
        )
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.axvline(0, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("lag (samples; > 0: signal leads the loss ratio)")
    ax.set_ylabel("Pearson r")
    ax.set_title(f"Lagged correlation with the loss ratio ({run})", fontsize=10)
    legend(ax, len(keys))
    return fig


def fig_seqlen_heatmap(probes: pd.DataFrame, stat: str = HEADLINE_STAT, n_bins: int = 20) -> Figure:
    """log10 of the median `stat` per (training-step bin, probe length): variance by length over training."""
    d = probes[["step", "probe_seqlen", stat]].replace([np.inf, -np.inf], np.nan).dropna()
    d = d[d[stat] > 0]
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    if not len(d):
        ax.text(0.5, 0.5, f"no probe data for {stat}", ha="center", va="center", transform=ax.transAxes)
        return fig
    edges = np.unique(np.linspace(d["step"].min(), d["step"].max() + 1, n_bins + 1).astype(int))
    d = d.assign(bin=pd.cut(d["step"], edges, right=False, include_lowest=True))
    grid = d.groupby(["probe_seqlen", "bin"], observed=True)[stat].median().apply(np.log10).unstack("bin")
    grid.columns = [f"{int(iv.left)}" for iv in grid.columns]
    sns.heatmap(grid.sort_index(ascending=False), ax=ax, cmap="viridis", cbar_kws={"label": f"log10 {stat}"})
    ax.set_xlabel("training step (bin start)")
    ax.set_ylabel("probe sequence length")
    ax.set_title(f"{stat} by probe length over training", fontsize=10)
    return fig


def fig_slw_schedule(steps: pd.DataFrame, schedule=None) -> Figure:
    """Trained sequence length and tokens consumed against the step, per run; with `schedule` (a
    gradvar.slw.SLWSchedule) its configured curve is drawn over the recorded lengths."""
    fig = Figure(figsize=(8, 4))
    ax_len, ax_tok = fig.subplots(1, 2)
    runs = by_run(steps)
    for (label, g), st in zip(runs, styles(len(runs))):
        line(ax_len, g["step"], g["seqlen"], st, label)
        line(ax_tok, g["step"], g["tokens"], st, label)
    if schedule is not None and len(steps):
        t = np.unique(np.linspace(1, steps["step"].max(), 2000).astype(int))  # a curve, not a million calls
        ax_len.plot(
            t,
            [schedule.seqlen(int(v)) for v in t],
            color="black",
            linestyle=":",
            linewidth=1.5,
            label=f"configured {schedule.schedule_type}",
        )
    ax_len.set_ylabel("sequence length")
    ax_tok.set_ylabel("tokens consumed")
    for ax in (ax_len, ax_tok):
        ax.set_xlabel("optimizer step")
    legend(ax_len, len(runs) + (schedule is not None))
    ax_len.set_title("Sequence length schedule", fontsize=10)
    ax_tok.set_title("Tokens", fontsize=10)
    return fig


def fig_val_loss(evals: pd.DataFrame) -> Figure:
    """Validation loss against tokens and against wall time; one style per method, one line per run."""
    fig = Figure(figsize=(9, 4))
    ax_tok, ax_time = fig.subplots(1, 2, sharey=True)
    method_col = "method" if "method" in evals.columns else None
    methods = sorted(evals[method_col].astype(str).unique()) if method_col else ["run"]
    sty = dict(zip(methods, styles(len(methods))))
    seen = set()
    for _label, g in by_run(evals):
        m = str(g[method_col].iloc[0]) if method_col else "run"
        lab = m if m not in seen else None
        seen.add(m)
        for ax, xcol in ((ax_tok, "tokens"), (ax_time, "time_s")):
            if xcol in g:
                ax.plot(
                    g[xcol],
                    g["val_loss"],
                    color=sty[m]["color"],
                    linestyle=sty[m]["linestyle"],
                    marker=sty[m]["marker"],
                    markersize=4,
                    linewidth=1.1,
                    label=lab,
                    alpha=0.85,
                )
    ax_tok.set_xlabel("training tokens")
    ax_time.set_xlabel("wall time (s)")
    ax_tok.set_ylabel("validation loss (nats)")
    legend(ax_tok, len(methods))
    ax_tok.set_title("Validation loss vs tokens", fontsize=10)
    ax_time.set_title("Validation loss vs wall time", fontsize=10)
    return fig


def _label(v) -> str:
    return "?" if pd.isna(v) else f"{v:g}"


def _sort_key(label: str) -> float:
    return float(label) if label != "?" else float("inf")


def fig_stability_grid(grid: pd.DataFrame) -> Figure:
    """Batch x LR cells per method, coloured by majority class and labelled with counts (print-safe)."""
    methods = sorted(grid["method"].astype(str).unique()) if len(grid) else ["-"]
    fig = Figure(figsize=(4 * len(methods) + 1, 3.5))
    axes = np.atleast_1d(fig.subplots(1, len(methods), squeeze=False)[0])
    colors = {"stable": PALETTE[2], "spiky": PALETTE[1], "diverged": PALETTE[3]}
    # shared axes: a cell left empty in one panel is a setting that method did not run
    lrs = sorted(set(grid["lr"].map(_label)), key=_sort_key) if len(grid) else []
    batches = sorted(set(grid["batch_size"].map(_label)), key=_sort_key) if len(grid) else []
    for ax, method in zip(axes, methods):
        g = grid[grid["method"].astype(str) == method]
        lr_lab, batch_lab = g["lr"].map(_label), g["batch_size"].map(_label)  # NaN (no config) -> "?"
        for (_, row), lr, batch in zip(g.iterrows(), lr_lab, batch_lab):
            i, j = lrs.index(lr), batches.index(batch)
            ax.add_patch(Rectangle((i - 0.5, j - 0.5), 1, 1, color=colors.get(row["class"], "grey"), alpha=0.7))
            ax.text(
                i,
                j,
                f"{row['class']}\n{row['n_stable']}/{row['n_spiky']}/{row['n_diverged']}\n"
                f"ev {row['spike_events_median']:.0f}",
                ha="center",
                va="center",
                fontsize=7,
            )
        ax.set_xticks(range(len(lrs)), lrs)
        ax.set_yticks(range(len(batches)), batches)
        ax.set_xlim(-0.5, len(lrs) - 0.5)
        ax.set_ylim(-0.5, len(batches) - 0.5)
        ax.set_xlabel("peak LR")
        ax.set_ylabel("batch size")
        ax.set_title(f"{method}  (stable/spiky/diverged seeds)", fontsize=9)
    return fig
