"""Training loss over micro-batches and ranks: mean, max, non-finite count, and the per-rank mean."""
from __future__ import annotations

import numpy as np
import torch

from .base import MAX, RANK, SUM, Quantity, Stat


class Loss(Quantity):
    name = "loss"

    def on_step(self, ctx):
        losses = ctx.extras.get("losses")
        if losses is None:
            return {}
        finite = torch.isfinite(losses)
        return {
            "loss_sum": Stat(losses.sum(), SUM),
            "loss_count": Stat(torch.ones_like(losses).sum(), SUM),
            "loss_max": Stat(losses.max(), MAX),
            "nonfinite_loss": Stat((~finite).sum().float(), SUM),
            "rank_loss": Stat(losses.mean(), RANK),
        }

    def finalize(self, raw, meta, groups):
        if "loss_sum" not in raw:
            return {}, {}
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = raw["loss_sum"][:, 0] / raw["loss_count"][:, 0]
        return {"loss": loss, "loss_max": raw["loss_max"][:, 0], "nonfinite_loss": raw["nonfinite_loss"][:, 0]}, {}
