"""A W&B history export (the chart's 'Download CSV'): `Step`, then `<run> - <metric>` columns, each with
`__MIN` and `__MAX` companions (the envelope of a smoothed or grouped chart, not metrics of their own)."""

from __future__ import annotations

import re

import pandas as pd

_RUN_COL = re.compile(r"^(?:Group: )?(.+?) - (.+)$")


def is_wandb_export(header: list) -> bool:
    """A W&B export: at least one `<run> - <metric>` column beside a Step column."""
    return any(str(h).strip().lower() in ("step", "_step") for h in header) and any(
        _RUN_COL.match(str(h)) for h in header
    )


def from_wandb(raw: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """(frame with plain metric names, notes): the first run's columns only, envelopes dropped."""
    runs: dict = {}
    keep = {}
    for col in raw.columns:
        m = _RUN_COL.match(str(col))
        if not m:
            if str(col).strip().lower() in ("step", "_step"):
                keep[col] = "step"
            continue
        run, metric = m.group(1), m.group(2)
        if metric.endswith(("__MIN", "__MAX")) or metric in ("_step", "_step__MIN", "_step__MAX"):
            continue
        runs.setdefault(run, []).append((col, metric))
    notes = []
    if not runs:
        return raw, notes
    first = next(iter(runs))
    keep.update(dict(runs[first]))
    if len(runs) > 1:
        notes.append(
            f"W&B export holds {len(runs)} runs: read '{first}' (the first), "
            "export one run per file to diagnose the others"
        )
    out = raw.loc[:, list(keep)]
    out.columns = list(keep.values())
    # A W&B export has a row per step of any metric: rows without this run's loss are other runs' steps.
    return out, notes
