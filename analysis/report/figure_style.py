"""The figures' shared style: a colourblind palette with line styles and markers (figures survive
black-and-white printing), lines thinned to a min/max envelope per bucket (spikes stay visible while a
million-step line stays cheap to draw), PNG output. Built without pyplot: no global state, nothing shown."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

PALETTE = sns.color_palette("colorblind")


LINESTYLES = ("-", "--", ":", "-.")


MARKERS = ("o", "s", "^", "D", "v", "P", "X")


MAX_POINTS = 4000


def styles(n: int) -> list[dict]:
    """n distinct (colour, line style, marker) combinations."""
    combos = zip(itertools.cycle(PALETTE), itertools.cycle(LINESTYLES), itertools.cycle(MARKERS))
    return [{"color": c, "linestyle": ls, "marker": m} for c, ls, m in itertools.islice(combos, n)]


def save_png(fig: Figure, path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")


def thin(x, y, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Keep each bucket's smallest and largest y (in order) when there are more than max_points points."""
    x, y = np.asarray(x), np.asarray(y, dtype=np.float64)
    if len(x) <= max_points:
        return x, y
    size = int(np.ceil(len(x) / (max_points // 2)))
    n = len(x) // size * size
    yy = np.where(np.isfinite(y[:n]), y[:n], np.nan).reshape(-1, size)
    ok = ~np.all(np.isnan(yy), axis=1)
    base = (np.arange(len(yy)) * size)[ok]
    lo, hi = base + np.nanargmin(yy[ok], axis=1), base + np.nanargmax(yy[ok], axis=1)
    idx = np.unique(np.concatenate([np.minimum(lo, hi), np.maximum(lo, hi), np.arange(n, len(x))]))
    return x[idx], y[idx]


def by_run(df: pd.DataFrame):
    """(label, sub-frame sorted by step) for each run in df (one run if there is no `run` column)."""
    if "run" not in df.columns:
        return [("run", df.sort_values("step"))]
    return [(str(k), g.sort_values("step")) for k, g in df.groupby("run", sort=True, observed=True)]


def line(ax, x, y, style, label, max_points=MAX_POINTS, **kw):
    tx, ty = thin(x, y, max_points)
    every = max(1, len(tx) // 12)  # a few markers per line: identity in print without clutter
    ax.plot(
        tx,
        ty,
        color=style["color"],
        linestyle=style["linestyle"],
        marker=style["marker"],
        markevery=every,
        markersize=4,
        linewidth=1.1,
        label=label,
        **kw,
    )


def legend(ax, n: int) -> None:
    if n > 1 or ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best", frameon=False)
