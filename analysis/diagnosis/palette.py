"""Colours shared by the diagnosis figures: seaborn's colour-blind-safe palette."""

from __future__ import annotations

import seaborn as sns

PALETTE = sns.color_palette("colorblind")
# Vermillion, reddish purple and grey stay apart under the common colour-vision deficiencies.
KIND_COLOURS = {"spike": PALETTE[3], "sustained_rise": PALETTE[4], "nonfinite": PALETTE[7]}
