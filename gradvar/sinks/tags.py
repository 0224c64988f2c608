"""The dashboard tag scheme: the rows a flush wrote, as (step, tag, value) scalars and (step, kind, text) events.

    steps   gradvar/<column>                   every column but `step` (the x-axis), NaN included
    layers  gradvar/layers/<group>/<stat>
    probes  gradvar/probe/<probe_seqlen>/<column>
    other   gradvar/<table>/<column>           evals (val_loss, ...); ranks as gradvar/ranks/<rank>/<column>
    events  gradvar/events (text)              one line per spike, non-finite value, note, checkpoint, ...

Pure functions over host rows: the sinks compute nothing the records do not already hold.
"""

from __future__ import annotations

import math

PREFIX = "gradvar"
_KEY = ("step", "tokens", "seqlen")


def scalars(tables: dict[str, list[dict]]) -> list[tuple[int, str, float]]:
    """Every number of the flushed rows under its tag, ordered by step (stable within a step)."""
    out: list[tuple[int, str, float]] = []
    for table, rows in tables.items():
        if table != "events":
            for row in rows:
                out.extend(_row_scalars(table, row))
    out.sort(key=lambda s: s[0])
    return out


def events(tables: dict[str, list[dict]]) -> list[tuple[int, str, str]]:
    """(step, kind, message) of each events row, in step order."""
    rows = sorted(tables.get("events", ()), key=lambda r: r["step"])
    return [(int(r["step"]), str(r["kind"]), str(r["message"])) for r in rows]


def _row_scalars(table: str, row: dict):
    step = int(row["step"])
    if table == "steps":
        return [(step, f"{PREFIX}/{k}", _float(v)) for k, v in row.items() if k != "step" and _is_num(v)]
    if table == "layers":
        return [(step, f"{PREFIX}/layers/{row['group']}/{row['stat']}", _float(row["value"]))]
    if table == "probes":
        base = f"{PREFIX}/probe/{int(row['probe_seqlen'])}"
        skip = (*_KEY, "probe_seqlen")
    elif table == "ranks":
        base, skip = f"{PREFIX}/ranks/{int(row['rank'])}", (*_KEY, "rank")
    else:
        base, skip = f"{PREFIX}/{table}", _KEY
    return [(step, f"{base}/{k}", _float(v)) for k, v in row.items() if k not in skip and _is_num(v)]


def _is_num(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) or hasattr(v, "__float__")


def _float(v) -> float:
    return math.nan if v is None else float(v)
