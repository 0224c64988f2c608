"""The study's figures, each a pure function of tidy tables returning a matplotlib Figure, with a caption
function computing the takeaway from the numbers the figure plots. x is the optimizer step wherever spikes
are drawn; panels are stacked (one y-axis each); the unigram and bigram cross-entropies are reference lines on
every loss axis."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.report.figure_style import styles  # noqa: E402

from ..stats.rules import RATIO_MARGIN, STEP_MARGIN  # noqa: E402

ARM_ORDER = ("baseline", "warmup", "slw", "batch-warmup")


def arm_key(arm: str) -> int:
    return next((i for i, a in enumerate(ARM_ORDER) if str(arm).startswith(a)), len(ARM_ORDER))


def _arm_styles(arms) -> dict:
    arms = sorted(set(arms), key=lambda a: (arm_key(a), a))
    return dict(zip(arms, styles(len(arms))))


def _ref_lines(ax, ref: dict, target: bool = True) -> None:
    ax.axhline(ref["unigram"], color="0.35", lw=0.9, ls="--", label=f"unigram {ref['unigram']:.2f}")
    ax.axhline(ref["bigram"], color="0.35", lw=0.9, ls=":", label=f"bigram {ref['bigram']:.2f}")
    if target:
        ax.axhline(ref["target"], color="tab:red", lw=0.7, ls="-.", label=f"target {ref['target']:.2f}")


def _plot_runs(ax, df: pd.DataFrame, x: str, y: str, style: dict, label: str) -> None:
    for i, (_, g) in enumerate(df.groupby("seed", sort=True)):
        g = g.sort_values("step")
        v = pd.to_numeric(g[y], errors="coerce")
        ax.plot(
            g[x],
            v,
            color=style["color"],
            ls=style["linestyle"],
            lw=1.1,
            alpha=1.0 if i == 0 else 0.55,
            label=label if i == 0 else None,
        )


def _loss_ylim(ax, values, ref: dict) -> None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    lo = min(ref["bigram"], v.min() if len(v) else ref["bigram"]) - 0.2
    ax.set_ylim(lo, ref["ln_vocab"] + 0.3)


def dilemma_runs(steps: pd.DataFrame) -> pd.DataFrame:
    """The reference run(s) and the large-batch baseline at every LR."""
    large = steps["batch"] == steps["batch"].max()
    return steps[(steps["role"] == "reference") | (large & (steps["arm"] == "baseline"))]


def fig_dilemma(steps: pd.DataFrame, ref: dict) -> Figure:
    """Probe loss against serial (optimizer) steps, top, and against tokens, bottom: the reference batch and
    the large-batch baseline at each LR; seed 0 solid, later seeds faded."""
    d = dilemma_runs(steps)
    keys = sorted({(int(b), float(lr)) for b, lr in zip(d["batch"], d["lr"])})
    st = dict(zip(keys, styles(len(keys))))
    fig = Figure(figsize=(7.5, 7.0))
    top, bottom = fig.subplots(2, 1)
    for (b, lr), style in st.items():
        g = d[(d["batch"] == b) & (d["lr"] == lr)].assign(mtokens=lambda x: x["tokens"] / 1e6)
        _plot_runs(top, g, "step", "probe_loss", style, f"batch {b}, LR {lr:g}")
        _plot_runs(bottom, g, "mtokens", "probe_loss", style, None)
    for ax in (top, bottom):
        _ref_lines(ax, ref)
        _loss_ylim(ax, d["probe_loss"], ref)
        ax.set_ylabel("probe loss (nats)")
    top.set_xlabel("optimizer step (serial steps)")
    bottom.set_xlabel("tokens (M)")
    top.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def cap_dilemma(outcomes: pd.DataFrame, ref: dict) -> str:
    d = outcomes[
        (outcomes["role"] == "reference")
        | ((outcomes["batch"] == outcomes["batch"].max()) & (outcomes["arm"] == "baseline"))
    ]
    parts = []
    for (b, lr), g in d.groupby(["batch", "lr"]):
        t = g["steps_to_target"]
        reached = ", ".join("not reached" if not np.isfinite(v) else f"{v:g}" for v in t)
        parts.append(f"batch {b} LR {lr:g}: {reached}")
    return (
        f"Probe loss (fixed held-out batch, every step) against optimizer steps (top) and tokens (bottom) for the "
        f"reference batch and the large-batch baseline at each LR, n = {len(d)} runs (seed 0 solid, seed 1+ "
        f"faded). Dashed: the validation split's unigram cross-entropy {ref['unigram']:.2f}; dotted: bigram "
        f"{ref['bigram']:.2f}; dash-dot: the target {ref['target']:.2f}; losses above ln V + 0.3 run off the top "
        f"(blow-ups: their values are in the final-loss figure's strip). Steps to target per seed: "
        + "; ".join(parts)
        + "."
    )


def fig_final_vs_lr(outcomes: pd.DataFrame, ref: dict) -> Figure:
    """Final validation loss against peak LR per arm (large batch; seeds as points, their mean as a line),
    with the unigram and bigram lines; below, a strip with the blow-ups and their largest probe loss."""
    o = outcomes[outcomes["batch"] == outcomes["batch"].max()]
    st = _arm_styles(o["arm"])
    fig = Figure(figsize=(7.5, 5.6))
    ax, strip = fig.subplots(2, 1, height_ratios=[4, 1], sharex=True)
    for arm, style in st.items():
        g = o[o["arm"] == arm].sort_values("lr")
        ok = g[np.isfinite(g["final_val_loss"]) & (g["final_val_loss"] <= ref["ln_vocab"])]
        ax.scatter(ok["lr"], ok["final_val_loss"], color=style["color"], marker=style["marker"], s=22, zorder=3)
        mean = ok.groupby("lr")["final_val_loss"].mean()
        ax.plot(mean.index, mean.values, color=style["color"], ls=style["linestyle"], lw=1.1, label=arm)
        blown = g[g["blowup"]]
        for i, r in enumerate(blown.itertuples()):
            strip.scatter([r.lr], [list(st).index(arm)], color=style["color"], marker=style["marker"], s=26)
            strip.annotate(
                f"{r.blowup_max:.3g} (s{r.seed})",
                (r.lr, list(st).index(arm)),
                fontsize=6,
                xytext=(4, 3 - 7 * i),
                textcoords="offset points",
            )
    _ref_lines(ax, ref, target=False)
    ax.set_xscale("log")
    lrs = sorted(o["lr"].unique())
    ax.set_xticks(lrs, [f"{x:g}" for x in lrs])
    ax.minorticks_off()
    ax.set_ylabel("final validation loss (nats)")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    strip.set_yticks(range(len(st)), list(st), fontsize=7)
    strip.set_ylim(-0.7, len(st) - 0.3)
    strip.set_xlabel("peak LR")
    strip.set_title(f"blow-ups: probe loss above ln V = {ref['ln_vocab']:.2f} (largest value printed)", fontsize=8)
    fig.tight_layout()
    return fig


def cap_final_vs_lr(outcomes: pd.DataFrame, ref: dict) -> str:
    o = outcomes[outcomes["batch"] == outcomes["batch"].max()]
    ok = o[np.isfinite(o["final_val_loss"])]
    best = ok.loc[ok["final_val_loss"].idxmin()] if len(ok) else None
    below_uni = int((ok["final_val_loss"] < ref["unigram"]).sum())
    below_bi = int((ok["final_val_loss"] < ref["bigram"]).sum())
    lead = (
        f"the lowest is {best['arm']} at LR {best['lr']:g} seed {int(best['seed'])}, {best['final_val_loss']:.3f}"
        if best is not None
        else "no run has a finite final loss"
    )
    return (
        f"Final validation loss against peak LR at the large batch, per arm (points: seeds; line: their mean), "
        f"n = {len(o)} runs; {below_uni} end below the unigram line ({ref['unigram']:.2f}) and {below_bi} below "
        f"the bigram line ({ref['bigram']:.2f}); {lead}. Strip: {int(o['blowup'].sum())} runs whose probe loss "
        f"went above ln V at some step, with the largest value."
    )


def forest_rows(cells: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (contrast, LR, outcome, seed) with the plotted effect: stability a - b in peak ratio,
    efficiency a / b in steps to target (inf / 0 where one arm does not reach it or blows up)."""
    rows = []
    for contrast, c in cells.items():
        for r in c.itertuples():
            if r.outcome == "stability":  # the ratios' difference is drawn even where an arm blew up (labelled)
                eff = r.a - r.b
            else:
                a, b = r.a, r.b
                eff = (
                    a / b
                    if np.isfinite(a) and np.isfinite(b)
                    else (0.0 if np.isfinite(a) else (math.inf if np.isfinite(b) else math.nan))
                )
            blown = "".join(k for k, v in (("a", r.a_blowup), ("b", r.b_blowup)) if v)
            rows.append(
                {"contrast": contrast, "lr": r.lr, "outcome": r.outcome, "seed": r.seed, "effect": eff}
                | {"sign": r.sign, "blown": blown}
            )
    return pd.DataFrame(rows)


def fig_forest(rows: pd.DataFrame) -> Figure:
    """Stacked panels, one per outcome; one row per contrast and LR; each seed a point; the margin shaded."""
    outcomes = [o for o in ("stability", "efficiency") if o in set(rows["outcome"])]
    fig = Figure(figsize=(7.5, 1.2 + 0.45 * len(rows.groupby(["contrast", "lr", "outcome"]))))
    axes = np.atleast_1d(fig.subplots(len(outcomes), 1))
    seed_style = styles(max(1, rows["seed"].nunique()))
    seeds = sorted(rows["seed"].unique())
    for ax, outcome in zip(axes, outcomes):
        g = rows[rows["outcome"] == outcome]
        labels = list(dict.fromkeys(f"{c}, LR {lr:g}" for c, lr in zip(g["contrast"], g["lr"])))
        null, lo, hi = (
            (0.0, -RATIO_MARGIN, RATIO_MARGIN)
            if outcome == "stability"
            else (1.0, 1 - STEP_MARGIN, 1 / (1 - STEP_MARGIN))
        )
        ax.axvspan(lo, hi, color="0.9", zorder=0)
        ax.axvline(null, color="0.4", lw=0.8)
        fin = g["effect"][np.isfinite(g["effect"])]
        span = max([abs(v - null) for v in fin] + [hi - null]) * 1.25
        for r in g.itertuples():
            k = seeds.index(r.seed)
            y = labels.index(f"{r.contrast}, LR {r.lr:g}") + (k - (len(seeds) - 1) / 2) * 0.25  # seeds side by side
            s = seed_style[k]
            x, text = r.effect, None
            if outcome == "stability" and r.blown:
                text = {"ab": "both blow up", "a": "a blows up", "b": "b blows up"}[r.blown]
            elif outcome == "efficiency" and (not np.isfinite(x) or x == 0.0):
                if np.isnan(x):
                    x, text = null, "neither reaches"
                else:
                    text = "only b reaches" if np.isinf(x) else "only a reaches"
                    x = null + (0.95 if np.isinf(x) else -0.95) * span
            ax.scatter([x], [y], color=s["color"], marker=s["marker"], s=24, zorder=3, label=f"seed {r.seed}")
            if text:
                right = x > null
                ax.annotate(
                    f"s{r.seed}: {text}",
                    (x, y),
                    fontsize=6,
                    va="center",
                    ha="right" if right else "left",
                    xytext=(-6 if right else 6, 0),
                    textcoords="offset points",
                )
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylim(-0.7, len(labels) - 0.3)
        ax.invert_yaxis()
        ax.set_xlim(null - span, null + span)
        ax.set_xlabel(
            "peak probe-loss ratio, a - b (left: a more stable)"
            if outcome == "stability"
            else "steps to target, a / b (left: a faster)"
        )
    handles, lab = axes[0].get_legend_handles_labels()
    by = dict(zip(lab, handles))
    axes[0].legend(by.values(), by.keys(), fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def cap_forest(rows: pd.DataFrame) -> str:
    n = rows.groupby(["contrast", "lr", "outcome"]).ngroups
    signs = rows.groupby(["contrast", "lr", "outcome"])["sign"].agg(
        lambda s: s.iloc[0] if s.nunique() == 1 else "mixed"
    )
    count = signs.value_counts().to_dict()
    return (
        f"Paired effects, one row per contrast (a vs b) and LR, {n} rows, each seed a point (the seed is the unit; "
        f"no interval at n <= 3). Top: difference in peak probe-loss ratio (margin ±{RATIO_MARGIN:g}, shaded; drawn "
        f"even where an arm blew up, which the rules count as a blow-up, not by the ratio); "
        f"bottom: ratio of steps to target (margin {1 - STEP_MARGIN:g}x-{1 / (1 - STEP_MARGIN):.2f}x, shaded). "
        f"Rows with the same sign in every seed: " + ", ".join(f"{k} {v}" for k, v in sorted(count.items())) + "."
    )


def focus_lr(steps: pd.DataFrame) -> float:
    """The large-batch LR with the most arms (ties: the larger LR): where the arms compare."""
    large = steps[(steps["batch"] == steps["batch"].max()) & (steps["role"] != "reference")]
    n = large.groupby("lr")["arm"].nunique()
    return float(n[n == n.max()].index.max())


def fig_early(steps: pd.DataFrame, window: tuple[int, int], lr: float, ref: dict, cols=None) -> Figure:
    """Stacked panels over the common early window at one LR, one line per arm and seed: probe loss (with the
    reference lines), probe-loss ratio, and the signals in `cols` (default the pre-clip gradient norm)."""
    cols = cols or ["probe_loss", "probe_loss_ratio", "grad_norm"]
    d = steps[(steps["lr"] == lr) & (steps["batch"] == steps["batch"].max()) & (steps["step"].between(*window))]
    st = _arm_styles(d["arm"])
    fig = Figure(figsize=(7.5, 1.9 * len(cols) + 0.6))
    axes = np.atleast_1d(fig.subplots(len(cols), 1, sharex=True))
    names = {
        "probe_loss": "probe loss (nats)",
        "probe_loss_ratio": "probe loss / best so far",
        "grad_norm": "pre-clip grad norm",
        "grad_trace_sigma": "tr(Σ) per sequence",
        "grad_true_sq": "|G|² estimate",
        "grad_noise_scale": "B_simple (sequences)",
        "grad_var_max": "max element-wise var",
    }
    for ax, col in zip(axes, cols):
        for arm, style in st.items():
            if col in d:
                _plot_runs(ax, d[d["arm"] == arm], "step", col, style, arm)
        if col == "probe_loss":
            _ref_lines(ax, ref)
            _loss_ylim(ax, d[col], ref)
        if col in ("grad_noise_scale", "grad_true_sq"):
            ax.set_yscale("symlog", linthresh=1.0 if col == "grad_noise_scale" else 1e-3)
        elif col in ("grad_norm", "grad_trace_sigma", "grad_var_max"):
            ax.set_yscale("log")
        ax.set_ylabel(names.get(col, col), fontsize=8)
    axes[-1].set_xlabel("optimizer step")
    axes[-1].set_xlim(window[0] - 0.5, window[1] + 0.5)
    axes[0].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def cap_early(outcomes: pd.DataFrame, window, lr: float, what: str) -> str:
    o = outcomes[(outcomes["lr"] == lr) & (outcomes["batch"] == outcomes["batch"].max())]
    peaks = "; ".join(
        f"{arm}: " + ", ".join(f"{p:.3g} at step {s:g}" for p, s in zip(g["peak_ratio"], g["peak_step"]))
        for arm, g in sorted(o.groupby("arm"), key=lambda kv: arm_key(kv[0]))
    )
    return (
        f"{what} over the common early window (steps {window[0]}-{window[1]}) at LR {lr:g}, batch "
        f"{int(o['batch'].max()) if len(o) else '?'}, n = {len(o)} runs (seed 0 solid, later seeds faded). Peak "
        f"probe-loss ratio and its step per arm and seed: {peaks}."
    )


def fig_length(probes: pd.DataFrame, window_end: float) -> Figure:
    """The equal-token length probe at the early steps: each statistic over probe length, divided by its value
    at the shortest length, one line per (LR, seed, step), stacked panels."""
    p = probes[probes["step"] <= window_end]
    cols = [c for c in ("grad_sq_max", "grad_sq_max_micro", "grad_trace_sigma_per_token") if c in p]
    fig = Figure(figsize=(7.5, 2.1 * len(cols) + 0.5))
    axes = np.atleast_1d(fig.subplots(len(cols), 1, sharex=True))
    keys = sorted({(float(lr), int(s)) for lr, s in zip(p["lr"], p["seed"])})
    st = dict(zip(keys, styles(len(keys))))
    for ax, col in zip(axes, cols):
        for (lr, seed), style in st.items():
            g = p[(p["lr"] == lr) & (p["seed"] == seed)]
            for i, (_, gs) in enumerate(g.groupby("step")):
                gs = gs.sort_values("probe_seqlen")
                v = gs[col].astype(float).to_numpy()
                ax.plot(
                    gs["probe_seqlen"],
                    v / v[0],
                    color=style["color"],
                    ls=style["linestyle"],
                    lw=0.9,
                    alpha=0.9,
                    label=f"LR {lr:g} seed {seed}" if i == 0 else None,
                )
        ax.axhline(1.0, color="0.4", lw=0.7)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylabel(f"{col}\n/ at shortest", fontsize=8)
    axes[-1].set_xlabel("probe sequence length (equal tokens at every length)")
    axes[0].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def cap_length(units: pd.DataFrame, probes: pd.DataFrame, window_end: float) -> str:
    steps = sorted(probes.loc[probes["step"] <= window_end, "step"].unique())
    vals = "; ".join(f"LR {u.lr:g} seed {u.seed}: {u.ratio:.3g}" for u in units.itertuples())
    return (
        f"The large-batch baseline's equal-token length probe at steps {', '.join(f'{s:g}' for s in steps)}: each "
        f"statistic at each length divided by its value at the shortest, one line per step, n = {len(units)} "
        f"(LR, seed) units. grad_sq_max longest / shortest, median over the steps: {vals}."
    )
