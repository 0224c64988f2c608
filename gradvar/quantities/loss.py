"""Training loss over micro-batches and ranks: mean, max, non-finite count, and the per-rank mean.

A loss passed to Monitor.step is checked against the losses the model's forwards returned, when the monitor
saw them: a single value equal to the last micro-batch's loss divided by the K micro-batches (the variable
that `(loss / K).backward()` loops hold, nanoGPT's among them) is the scaled loss, not the step's; the
forwards' losses are recorded instead and a note says so.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import MAX, RANK, SUM, Quantity, Stat


class Loss(Quantity):
    name = "loss"
    writes = frozenset({"loss_sum", "loss_count", "loss_max", "nonfinite_loss", "rank_loss", "loss_divided"})
    columns = frozenset({"loss", "loss_max", "nonfinite_loss"})
    reads_state = False

    def on_step(self, ctx):
        losses = ctx.facts.losses
        if losses is None:
            return {}
        out = {}
        forward = ctx.facts.forward_losses
        if ctx.facts.loss_given and forward is not None and len(forward) > 1 and len(losses) == 1:
            given, last = losses[0], forward[-1]
            divided = torch.isclose(given * len(forward), last, rtol=1e-5) & ~torch.isclose(given, last, rtol=1e-5)
            losses = torch.where(divided, forward, given.expand_as(forward))
            out["loss_divided"] = Stat(divided.float(), MAX)
        finite = torch.isfinite(losses)
        return out | {
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

    def notes(self, raw):
        if not (raw.get("loss_divided", np.zeros((1, 1))) == 1).any():
            return []
        return [
            (
                "loss_divided",
                "the loss passed to Monitor.step was the last micro-batch's loss divided by the "
                "number of micro-batches (the scaled loss of `(loss / K).backward()`): the loss columns hold the "
                "mean of the forwards' losses instead; pass the unscaled loss, or a list of the micro-batch losses",
            )
        ]
