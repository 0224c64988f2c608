"""A gradvar run directory: its records/ tables (steps, evals, events)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import LogError
from .table import LogData, _numeric_frame, finalize


def _load_gradvar(p: Path) -> LogData:
    from gradvar.records import read_records

    errors: list = []
    try:
        tables = read_records(p, tables=["steps", "evals", "events"], errors=errors)
    except Exception as exc:  # pyarrow raises many types; the user needs one line, not a traceback
        raise LogError(f"{p}: cannot read gradvar records ({type(exc).__name__}: {exc})") from None
    steps = tables.get("steps", pd.DataFrame())
    if steps is None or steps.empty:
        raise LogError(f"{p}: gradvar run has no rows in records/steps yet")
    log = finalize(steps, [f"steps row {i}" for i in range(len(steps))], str(p), "gradvar")
    log.notes.extend(errors)
    evals = tables.get("evals")
    if evals is not None and not evals.empty:
        ev = evals.rename(columns={"val_loss": "eval_loss", "val_ppl": "eval_ppl"})
        log.eval_df = _numeric_frame(ev, keep_step=True)
    events = tables.get("events")
    if events is not None and not events.empty and "kind" in events:
        counts = events["kind"].astype(str).value_counts()
        msgs = events["message"].astype(str) if "message" in events else pd.Series([], dtype=str)
        # The monitor's note that a step ended without a loss: NaN in the loss column means 'not given' then.
        log.meta["no_loss_note"] = bool(msgs.str.contains("no loss reached the monitor", regex=False).any())
        log.notes.append("gradvar events: " + ", ".join(f"{k} x{v}" for k, v in counts.items()))
    return log
