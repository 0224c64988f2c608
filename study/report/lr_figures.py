"""Figures of an LR grid, each `fig_*(...) -> (Figure, caption)`: the caption says what is plotted, n, and
the takeaway computed from the same numbers. Legends sit outside the axes so they never cover data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.report.figure_style import styles  # noqa: E402
from analysis.report.markdown import fmt  # noqa: E402

from ..stats.lr_grid import EARLY_FACTOR, paired, unstable_lrs  # noqa: E402

KNOWN = ("baseline", "slw", "batch-warmup", "warmup20")


def _arm_styles(arms) -> dict:
    """One style per arm, the same in every figure: the known arms first, in their fixed order."""
    order = [a for a in KNOWN if a in arms] + sorted(a for a in arms if a not in KNOWN)
    return dict(zip(order, styles(len(order))))


def _outside(ax) -> None:
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def _loss_cap(rows: pd.DataFrame) -> float:
    """ln(vocab): a final loss above it is worse than a uniform guess (diverged)."""
    return float(rows["loss_cap"].max()) if "loss_cap" in rows else np.inf


def _n_text(rows: pd.DataFrame) -> str:
    return (
        f"n = {len(rows)} runs ({rows['arm'].nunique()} arms x {rows['lr'].nunique()} LRs x "
        f"{rows['seed'].nunique()} seeds)"
    )


def fig_loss_vs_lr(rows: pd.DataFrame, m: float) -> tuple[Figure, str]:
    """(a) Final validation loss against peak LR per arm: seeds as points, a line through seed means. Losses
    above ln(vocab) (worse than a uniform guess: diverged) are drawn at that line, so they do not flatten the
    rest; the tables keep their values."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    arms = list(dict.fromkeys(rows["arm"]))
    cap = _loss_cap(rows)
    shown = rows.assign(final_val_loss=rows["final_val_loss"].clip(upper=cap))
    means = shown.groupby(["arm", "lr"])["final_val_loss"].mean()
    for arm, st in _arm_styles(arms).items():
        g = shown[shown["arm"] == arm]
        ax.scatter(g["lr"], g["final_val_loss"], color=st["color"], marker=st["marker"], s=18, alpha=0.6)
        mu = means.loc[arm]
        ax.plot(mu.index, mu.to_numpy(), color=st["color"], linestyle=st["linestyle"], marker=st["marker"], label=arm)
    n_over = int((rows["final_val_loss"] > cap).sum())
    if n_over:
        ax.axhline(cap, color="black", linestyle=":", linewidth=0.8, label=f"ln(vocab) = {fmt(cap)}: diverged above")
    best_arm, best_lr = means.idxmin()
    best = float(means.min())
    if np.isfinite(m):
        ax.axhspan(best, best + m, color="0.85", zorder=0, label=f"best mean + m ({fmt(m)})")
    _lr_axis(ax, rows["lr"])
    ax.set_xlabel("peak LR")
    ax.set_ylabel("final validation loss")
    _outside(ax)
    top = float(rows["lr"].max())
    at_top = rows.groupby(["arm", "lr"])["final_val_loss"].mean().xs(top, level="lr")
    over = f"; {n_over} runs above ln(vocab) are drawn on that line (their values are in the tables)" if n_over else ""
    caption = (
        f"Final validation loss vs peak LR (log scale) per arm, {_n_text(rows)}; points are seeds, lines join "
        f"seed means; the grey band is the best seed mean plus the noise margin m = {fmt(m)}{over}. Lowest mean: "
        f"{best_arm} at LR {best_lr:g} ({fmt(best)}); at the largest LR ({top:g}) {at_top.idxmin()} is lowest "
        f"({fmt(at_top.min())}) and {at_top.idxmax()} highest ({fmt(at_top.max())})."
    )
    return fig, caption


def _effects(rows: pd.DataFrame, treat: str) -> pd.DataFrame:
    others = [a for a in dict.fromkeys(rows["arm"]) if a != treat]
    frames = [paired(rows, treat, o) for o in others]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _effect_panel(ax, d: pd.DataFrame, col: str, arms: list[str]) -> None:
    spread = np.exp(np.linspace(-0.08, 0.08, max(len(arms), 1)))  # arms side by side on a log axis
    by_arm = _arm_styles([*arms, "slw"])
    for (arm, st), k in zip(((a, by_arm[a]) for a in arms), spread):
        g = d[d["b"] == arm]
        x = g["lr"].to_numpy(float) * k
        ax.scatter(x, g[col], color=st["color"], marker=st["marker"], s=14, alpha=0.5)
        s = g.groupby("lr")[col].agg(["mean", "min", "max"])
        xs = s.index.to_numpy(float) * k
        err = [s["mean"] - s["min"], s["max"] - s["mean"]]
        ax.errorbar(xs, s["mean"], yerr=err, color=st["color"], marker=st["marker"], linestyle="none", capsize=3)
        ax.plot([], [], color=st["color"], marker=st["marker"], linestyle="none", label=f"SLW - {arm}")
    ax.axhline(0.0, color="black", linewidth=0.8)
    _lr_axis(ax, d["lr"])


def _lr_axis(ax, lrs) -> None:
    """Log x with the grid's LRs as plain tick labels (0.03, not 3 x 10^-2)."""
    ax.set_xscale("log")
    ticks = sorted({float(v) for v in lrs})
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.minorticks_off()


def fig_paired_effects(rows: pd.DataFrame, treat: str = "slw") -> tuple[Figure, str] | None:
    """(b) SLW minus each other arm at each LR, seed-paired, on final loss (capped at ln(vocab), as in (a)) and
    on excess area (symmetric log axis: a diverged LR's areas would flatten the others)."""
    cap = _loss_cap(rows)
    d = _effects(rows.assign(final_val_loss=rows["final_val_loss"].clip(upper=cap)), treat)
    if not len(d):
        return None
    arms = list(dict.fromkeys(d["b"]))
    fig = Figure(figsize=(7, 5.5))
    ax_loss, ax_area = fig.subplots(2, 1, sharex=True)
    _effect_panel(ax_loss, d, "d_final_val_loss", arms)
    _effect_panel(ax_area, d, "d_excess_area", arms)
    ax_area.set_yscale("symlog", linthresh=0.01)
    ax_loss.set_ylabel("Δ final val loss\n(capped at ln V)")
    ax_area.set_ylabel("Δ excess area\n(symlog, ratio x M tokens)")
    ax_area.set_xlabel("peak LR")
    _outside(ax_loss)
    n = int(d.groupby(["b", "lr"]).size().min())
    interval = (
        "with n = 2 the bar is the range of the two seeds, not a confidence interval"
        if n == 2
        else f"bars: min to max over {n} seeds"
    )
    lower = {a: (g.groupby("lr")["d_excess_area"].max() < 0).sum() for a, g in d.groupby("b", sort=False)}
    caption = (
        f"Seed-paired effects, SLW minus each other arm at each peak LR: final validation loss, capped at "
        f"ln(vocab) (top), and excess area of the probe loss ratio, symmetric log axis (bottom); points are "
        f"seeds, markers the mean, bars the range ({interval}); "
        f"{n} seed pairs per cell. SLW has less excess area in every seed pair at "
        + "; ".join(f"{c} of {d['lr'].nunique()} LRs against {a}" for a, c in lower.items())
        + "."
    )
    return fig, caption


def _tokens_unit(tokens: float) -> tuple[float, str]:
    return (1e3, "k") if tokens < 1e6 else (1e6, "M")


def _window_lr(rows: pd.DataFrame) -> tuple[float, str]:
    """The spike to zoom on: at the largest LR where the baseline is unstable in every seed but ends below
    ln(vocab) in every seed (a spike it trains through, not a divergence), else the largest unstable LR."""
    u = unstable_lrs(rows)
    base = rows[rows["arm"] == "baseline"]
    cap = _loss_cap(rows)
    alive = [lr for lr in u if (base.loc[base["lr"] == lr, "final_val_loss"] < cap).all()]
    if alive:
        return max(alive), (
            f"the largest LR at which the baseline is unstable in every seed and still ends below ln(vocab) "
            f"({max(alive):g})"
        )
    if u:
        return max(u), f"the largest LR at which the baseline is unstable in every seed ({max(u):g})"
    top = float(rows["lr"].max())
    return top, f"the largest LR ({top:g}; the baseline is unstable in every seed at none)"


def _window(run) -> pd.DataFrame:
    warmup = int((run.config.get("optim") or {}).get("warmup_steps") or 0)
    s = run.steps
    return s[s["step"] <= EARLY_FACTOR * warmup].sort_values("step")


def fig_spike_window(runs, rows: pd.DataFrame) -> tuple[Figure, str] | None:
    """(c) The probe loss ratio over the early window (steps <= 3 x warmup) at one LR, one line per arm,
    the LR schedule and SLW's sequence length on twin axes; the lowest seed of each arm."""
    lr, why = _window_lr(rows)
    seed = int(rows["seed"].min())
    chosen = {r.method: r for r in runs if r.lr == lr and r.seed == seed}
    if not chosen:
        return None
    unit, uname = _tokens_unit(max(float(_window(r)["tokens"].max() or 0) for r in chosen.values()))
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    ax_lr, ax_len = ax.twinx(), ax.twinx()
    ax_len.spines["right"].set_position(("axes", 1.13))
    peaks = {}
    by_arm = _arm_styles(list(chosen))
    for arm, run in chosen.items():
        st = by_arm[arm]
        w = _window(run)
        x = w["tokens"].to_numpy(float) / unit
        r = w["probe_loss_ratio"].to_numpy(float) if "probe_loss_ratio" in w else np.full(len(w), np.nan)
        ax.plot(x, r, color=st["color"], linestyle=st["linestyle"], marker=st["marker"], markersize=3, label=arm)
        ax_lr.plot(x, w["lr"], color=st["color"], linestyle=":", linewidth=0.8, alpha=0.6)
        if run.slw.get("enabled") and run.slw.get("control", "off") == "off":
            ax_len.step(x, w["seqlen"], where="post", color="0.4", linewidth=1.0, label=f"{arm} seq length")
        peaks[arm] = float(np.nanmax(r)) if np.isfinite(r).any() else np.nan
    ax.axhline(1.0, color="black", linewidth=0.6)
    ax.set_xlabel(f"tokens ({uname})")
    ax.set_ylabel("probe loss ratio")
    ax_lr.set_ylabel("scheduled LR (dotted)")
    ax_len.set_ylabel("SLW sequence length (grey)")
    handles = [h for a in (ax, ax_len) for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.25, 1.0))
    order = sorted((v, k) for k, v in peaks.items() if np.isfinite(v))
    ranking = ", ".join(f"{k} {fmt(v)}" for v, k in reversed(order))
    caption = (
        f"The spike window: probe loss ratio vs tokens ({uname}) over steps <= {EARLY_FACTOR} x the LR warmup, at "
        f"{why}, seed {seed}, one run per arm (n = {len(chosen)}); dotted: each arm's scheduled LR (right axis); "
        f"grey steps: SLW's sequence length. Peak ratio in the window: {ranking or 'no probe loss recorded'}."
    )
    return fig, caption
