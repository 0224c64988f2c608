"""Lightning's CSVLogger `metrics.csv`: one row per log call, so a training step, its validation and the epoch
summary can each have a row, and `train_loss_step`/`train_loss_epoch` split one metric in two. Training rows of
the same step are merged (first value of each column); epoch summaries and validation rows, which carry no
per-step loss, become the eval table in finalize()."""

from __future__ import annotations

import pandas as pd


def is_lightning(header: list) -> bool:
    """Lightning's layout: epoch and step columns, and metrics split into `_step` / `_epoch` twins."""
    names = [str(h).strip().lower() for h in header]
    return "epoch" in names and "step" in names and any(n.endswith("_step") for n in names)


def merge_step_rows(raw: pd.DataFrame, labels: list) -> tuple[pd.DataFrame, list]:
    """Merge rows that share a step and both carry the per-step loss (two log calls in one step)."""
    loss_col = next((c for c in raw.columns if str(c).lower() in ("train_loss_step", "loss_step", "train_loss")), None)
    if loss_col is None:
        return raw, labels
    has_loss = raw[loss_col].map(lambda v: v is not None and str(v).strip() != "")
    train, aside = raw[has_loss], raw[~has_loss]
    if not train["step"].duplicated().any():
        return raw, labels
    first_label = pd.Series(labels, index=raw.index)[has_loss].groupby(train["step"], sort=False).first()
    blank = train.map(lambda v: None if v is None or str(v).strip() == "" else v)
    merged = blank.groupby("step", sort=False, as_index=False).first()
    out = pd.concat([merged, aside], ignore_index=True)
    return out, list(first_label) + [labels[i] for i in range(len(labels)) if not has_loss.iloc[i]]
