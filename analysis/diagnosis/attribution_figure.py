"""One figure per major event: the loss on top, below it the series that moved first, each divided by its own
level before the event (so a flat line at 1 is "at its level" whatever the units), the lead shaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .palette import PALETTE

MAJOR = ("severe", "moderate")
MAX_FIGURES = 4


def fig_attribution(df: pd.DataFrame, *, loss_step: int, first_step=None, title: str = "") -> Figure:
    """df: an Attribution.window (step, name, value, rel; the name 'loss' for the loss). loss_step: where the
    loss left its level; first_step: where the first leader did (None: nothing led)."""
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax, axr = fig.subplots(2, 1, sharex=True, height_ratios=[1.2, 2])
    loss = df[df["name"] == "loss"]
    ax.plot(loss["step"], loss["value"], color=PALETTE[0], marker=".", ms=4, lw=1.2, label="training loss")
    others = [n for n in dict.fromkeys(df["name"]) if n != "loss"]
    for i, name in enumerate(others):
        d = df[(df["name"] == name) & np.isfinite(df["rel"])]
        ax_kw = {"marker": "o" if len(d) < 0.5 * (d["step"].max() - d["step"].min() + 1) else ".", "ms": 3}
        axr.plot(d["step"], d["rel"], color=PALETTE[(i + 1) % len(PALETTE)], lw=1, label=name, **ax_kw)
    axr.axhline(1.0, color=PALETTE[7], lw=0.8, ls=":")
    if len(others):
        rel = df.loc[df["name"] != "loss", "rel"].to_numpy(np.float64)
        rel = rel[np.isfinite(rel) & (rel > 0)]
        if len(rel) and rel.max() / rel.min() > 10:
            axr.set_yscale("log")
        axr.legend(fontsize=7, loc="upper left")
    else:
        axr.text(0.5, 0.5, "no recorded signal left its level", ha="center", va="center", transform=axr.transAxes)
    for a in (ax, axr):
        a.axvline(loss_step, color=PALETTE[3], lw=1, ls="--")
        if first_step is not None and first_step < loss_step:
            a.axvspan(first_step - 0.5, loss_step - 0.5, color=PALETTE[3], alpha=0.12, lw=0)
    lead = loss_step - first_step if first_step is not None and first_step < loss_step else 0
    what = (
        f"lead {lead} step{'s' if lead != 1 else ''} (shaded) before the loss left its level (dashed)"
        if lead
        else "nothing moved before the loss left its level (dashed)"
    )
    ax.set_title(f"{title}: {what}" if title else what, fontsize=9, parse_math=False)
    ax.set_ylabel("loss (nats)")
    axr.set_ylabel("value / its level before")
    axr.set_xlabel("step")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def major_events(spikes: pd.DataFrame, atts: list) -> list:
    """The attributions to draw: events of moderate or severe size, the largest first (at least the largest)."""
    if not len(spikes) or not atts:
        return []
    by_event = {a.event: a for a in atts}
    sp = spikes[spikes["event"].isin(by_event)].sort_values("rise", ascending=False, na_position="first")
    major = sp[sp["severity"].isin(MAJOR)]
    pick = major if len(major) else sp.head(1)
    return [by_event[e] for e in pick["event"].head(MAX_FIGURES)]


def figure_of(att) -> Figure:
    lead = att.leaders
    first = int(lead["step"].min()) if len(lead) else None
    return fig_attribution(att.window, loss_step=att.loss_step, first_step=first, title=f"event {att.event}")
