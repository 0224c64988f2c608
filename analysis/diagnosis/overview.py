"""The report's first figure: loss, grad norm and LR over one step axis, each event shaded and numbered.

Long logs are drawn as min/max envelopes per bin (one bin per couple of pixels), so a one-entry spike in a
100k-entry log keeps its exact peak on screen while the figure stays fast to render.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import blended_transform_factory

from ..logs import LogData
from . import Diagnosis
from .palette import KIND_COLOURS, PALETTE

ENVELOPE_OVER = 5000  # entries; above this a line is drawn as its per-bin min/max envelope
ENVELOPE_BINS = 2000  # about two bins per pixel of a 9-inch panel at 110 dpi
PANELS = (("loss", "training loss (nats)"), ("grad_norm", "grad norm"), ("lr", "learning rate"))


def envelope(x: np.ndarray, y: np.ndarray, bins: int = ENVELOPE_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the finite points, or for long series each bin's min and max in step order (extremes kept)."""
    ok = np.isfinite(y)
    x, y = np.asarray(x, np.float64)[ok], np.asarray(y, np.float64)[ok]
    if len(y) <= ENVELOPE_OVER:
        return x, y
    k = -(-len(y) // bins)
    pad = np.full(bins * k - len(y), np.nan)
    grid = np.concatenate([y, pad]).reshape(bins, k)
    rows = ~np.isnan(grid).all(axis=1)
    base = np.arange(bins)[rows] * k
    lo, hi = base + np.nanargmin(grid[rows], axis=1), base + np.nanargmax(grid[rows], axis=1)
    idx = np.sort(np.stack([lo, hi], axis=1), axis=1).ravel()
    return x[idx], y[idx]


def _si(v: float, _pos=None) -> str:
    """Tick label 1500 -> '1.5k', 2_000_000 -> '2M'."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.4g}{suffix}"
    return f"{v:.4g}"


def _log_tick(v: float, _pos=None) -> str:
    """Log-axis labels as plain numbers; minor ticks labelled only at 2 and 5 times a power of ten."""
    if v <= 0:
        return ""
    m = v / 10 ** np.floor(np.log10(v))
    near = round(m)
    return f"{v:.3g}" if abs(m - near) < 1e-6 and near in (1, 2, 5) else ""


def _wide(v: np.ndarray) -> bool:
    """Log y when the positive values span more than one decade."""
    v = v[np.isfinite(v)]
    return bool(len(v) and (v > 0).all() and v.max() / v.min() > 10)


def _shade(ax, spikes: pd.DataFrame, half: float, number: bool, xspan: float) -> None:
    """Shade each event's exact step span; a span under ~1 pixel also gets a hairline so it stays visible, and
    numbers closer than 3% of the axis to the previous one are left out so they never overprint."""
    top = blended_transform_factory(ax.transData, ax.transAxes)
    last = -np.inf
    for _, ev in spikes.iterrows():
        lo, hi = ev["start_step"] - half, ev["end_step"] + half
        colour = KIND_COLOURS.get(ev["kind"], PALETTE[7])
        ax.axvspan(lo, hi, color=colour, alpha=0.3, lw=0)
        if hi - lo < xspan / 1000:
            ax.axvline((lo + hi) / 2, color=colour, alpha=0.6, lw=0.8)
        if number and (lo + hi) / 2 - last >= 0.03 * xspan:
            last = (lo + hi) / 2
            ax.text(
                (lo + hi) / 2,
                1.01,
                f"#{int(ev['event'])}",
                transform=top,
                ha="center",
                va="bottom",
                fontsize=8,
                fontweight="bold",
                color="0.25",
            )


def _series(log: LogData, diag: Diagnosis) -> list:
    """(column, label, steps, values) for each panel the log can fill; the loss always comes first."""
    out = [("loss", PANELS[0][1], diag.entries["step"].to_numpy(), diag.entries["loss"].to_numpy(np.float64))]
    df = log.df
    for col, label in PANELS[1:]:
        if col in df and np.isfinite(df[col].to_numpy(np.float64)).any():
            out.append((col, label, df["step"].to_numpy(), df[col].to_numpy(np.float64)))
    return out


def fig_overview(log: LogData, diag: Diagnosis) -> Figure:
    """Loss (and grad norm, LR where logged) over steps on a shared axis, events shaded and numbered."""
    series = _series(log, diag)
    heights = [3] + [1.4] * (len(series) - 1)
    fig = Figure(figsize=(9, 2.2 + 1.5 * len(series)), layout="constrained")
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    xspan = max(float(np.ptp(series[0][2])), diag.interval) if len(series[0][2]) else 1.0
    for i, (ax, (_col, label, step, v)) in enumerate(zip(axes, series)):
        x, y = envelope(step, v)
        ax.plot(x, y, color=PALETTE[i], lw=0.8)
        _shade(ax, diag.spikes, diag.interval / 2, number=i == 0, xspan=xspan)
        if _wide(v):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(_log_tick))
            ax.yaxis.set_minor_formatter(FuncFormatter(_log_tick))
        bad = ~np.isfinite(v)
        if bad.any():
            ax.plot(
                step[bad],
                np.full(bad.sum(), ax.get_ylim()[1]),
                "x",
                color="black",
                ms=6,
                clip_on=False,
                label="NaN/inf",
            )
            ax.legend(fontsize=7, loc="upper right")
        ax.set_ylabel(label, fontsize=9)
    axes[0].set_title(
        f"{diag.run_class}: {len(diag.spikes)} event(s), shaded and numbered as in the events table",
        fontsize=10,
        parse_math=False,
        pad=14,
    )
    axes[-1].set_xlabel("step")
    axes[-1].xaxis.set_major_formatter(FuncFormatter(_si))
    return fig
