"""The causal 2 x 2 as a paired plot: one panel per outcome, the four arms on x, a thin line per block."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..stats.causal import ARMS, OUTCOMES  # noqa: E402


def fig_causal(arms, n_blocks: int):
    """(Figure, caption), or (None, '') without arms."""
    if arms.empty:
        return None, ""
    fig, axes = plt.subplots(1, len(OUTCOMES), figsize=(3.2 * len(OUTCOMES), 3.2))
    x = np.arange(len(ARMS))
    for ax, (col, label) in zip(axes, OUTCOMES.items()):
        wide = arms.pivot_table(index=["seed", "step"], columns="arm", values=col).reindex(columns=list(ARMS))
        for _, r in wide.iterrows():
            ax.plot(x, r.to_numpy(float), color="0.6", linewidth=0.8, marker="o", markersize=3)
        ax.plot(x, wide.mean().to_numpy(float), color="black", linewidth=2.2, marker="o", label="mean")
        ax.set_xticks(x, [a.replace("-", "\n") for a in ARMS], fontsize=8)
        ax.set_title(label, fontsize=8)
    means = arms.groupby("arm")["log_vhat_max"].mean()
    gap = (means.get("full-low", np.nan) + means.get("full-high", np.nan)) / 2 - (
        means.get("short-low", np.nan) + means.get("short-high", np.nan)
    ) / 2
    fig.tight_layout()
    caption = (
        f"Figure: the causal 2 x 2, {n_blocks} blocks (a source run at a checkpoint step, its four arms joined by "
        "a thin line; bold: the mean). Arms: length short/full x tokens per step low/high. At equal tokens, full "
        f"length changes log max v-hat by {gap:+.3g} on average ({'up' if gap > 0 else 'down'})."
    )
    return fig, caption
