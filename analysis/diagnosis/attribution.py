"""What moved first, in words: the per-event attribution of a gradvar run (analysis.records.attribution) as a
few lines per event, for `gradvar diagnose` and `gradvar report`."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..records.attribution import Attribution, attribute_run
from ..records.departure import MIN_HISTORY

NAMED = 4
"""Series named per line (the rest are counted)."""
NO_LEAD = "no recorded signal led this spike"


def attribute_records(run_dir, spikes: pd.DataFrame) -> tuple[list[Attribution], list[str]]:
    """Read a run directory's steps, layers and probes and attribute each event of `spikes` (diagnose's table)."""
    from gradvar.records import read_records

    errors: list = []
    tables = read_records(Path(run_dir), tables=["steps", "layers", "probes"], errors=errors)
    steps = tables.get("steps")
    if steps is None or steps.empty:
        return [], []
    return attribute_run(steps, spikes, tables.get("layers"), tables.get("probes"))


def _x(factor: float) -> str:
    return f"x{factor:.3g}" if math.isfinite(factor) else "signed"


def _when(row) -> str:
    """'at step 20' or, for a sparse series, 'between steps 14 and 16' (its departure is known only to lie there)."""
    if row["sparse"] and row["prev_step"] >= 0 and row["step"] - row["prev_step"] > 1:
        return f"between steps {row['prev_step'] + 1} and {row['step']}"
    return f"at step {row['step']}"


def _named(rows: pd.DataFrame, lead: bool) -> str:
    parts = []
    for _, r in rows.head(NAMED).iterrows():
        size = f"{_x(r['factor'])}, z {r['z']:.0f}" if math.isfinite(r["factor"]) else f"z {r['z']:.0f}"
        if r["scale"] == "nats":
            size = f"+{r['rise']:.2g} nats, z {r['z']:.0f}"
        ahead = f", {r['lead']} step{'s' if r['lead'] != 1 else ''} before" if lead else ""
        parts.append(f"{r['name']} {_when(r)}{ahead} ({size})")
    more = f"; {len(rows) - NAMED} more" if len(rows) > NAMED else ""
    return "; ".join(parts) + more


def _lr_words(att: Attribution) -> str:
    lr = att.lr
    if not lr:
        return ""
    frac = f"{lr['frac']:.0%} of its peak" if math.isfinite(lr.get("frac", math.nan)) else f"{lr['lr']:.3g}"
    if lr["phase"] == "warmup":
        return f"It came during LR warmup (LR at {frac}, rising), a cause no single step shows."
    return ""


def attribution_lines(att: Attribution) -> list[str]:
    """A few lines for one event: the verdict first, then what it rests on."""
    span = f"steps {att.start_step}-{att.end_step}" if att.end_step != att.start_step else f"step {att.start_step}"
    head = f"Event {att.event} ({span}; the loss left its level at step {att.loss_step}):"
    out = []
    if att.verdict == "led":
        lead = att.leaders
        sched = lead[lead["role"] == "schedule"]
        out.append(f"{head} moved first: {_named(lead, lead=True)}.")
        if len(sched):
            out.append(f"The LR schedule itself moved first ({_named(sched, lead=True)}).")
        if att.origin:
            spread = ""
            if att.spread:
                first_steps = {}
                for g, s in att.spread:
                    first_steps.setdefault(s, []).append(g)
                spread = "; then " + ", ".join(
                    f"{', '.join(gs[:NAMED])}{f' and {len(gs) - NAMED} more' if len(gs) > NAMED else ''} (step {s})"
                    for s, gs in sorted(first_steps.items())
                )
            out.append(f"It started in group {att.origin}{spread or ' (no other group moved by the peak)'}.")
        elif len(att.first_groups) > 1:
            out.append(
                f"No single group first: {', '.join(att.first_groups[:NAMED])}"
                f"{f' and {len(att.first_groups) - NAMED} more' if len(att.first_groups) > NAMED else ''} moved "
                "at the same step."
            )
    elif att.verdict == "batch":
        led = "" if len(att.leaders) else f" {NO_LEAD};"
        words = f"{head}{led} the batch of step {att.loss_step} was the cause:"
        h = att.held_out or {}
        if h.get("at_level"):
            words += (
                f" the training loss left its level while the held-out probe loss of the same parameters (after "
                f"step {h['step']}) stayed at it ({h['rise']:+.2g} nats)."
            )
        shape = att.with_loss[att.with_loss["role"] == "input"]
        if len(shape):
            words += f" The batch's shape changed: {_named(shape, lead=False)}."
        out.append(words)
        if len(att.leaders):
            out.append(f"Moved before it, without harm to the parameters: {_named(att.leaders, lead=True)}.")
    else:
        judged = (
            f" ({att.n_judged} of {att.n_series} series had the {MIN_HISTORY} records of history to be judged)"
            if att.n_judged < att.n_series
            else ""
        )
        out.append(f"{head} {NO_LEAD}{judged}.")
    with_loss = att.with_loss[att.with_loss["role"] != "input"] if att.verdict == "batch" else att.with_loss
    if len(with_loss):
        out.append(f"With the loss (step {att.loss_step}): {_named(with_loss, lead=False)}.")
    m = att.moments
    if m:
        f, s = m["first"], m["second"]

        def part(d, which):
            how = f"rose {_x(d['factor'])} at step {d['step']}" if d["step"] is not None else "stayed at its level"
            if d["step"] is None and math.isfinite(d["factor"]):
                how += f" ({_x(d['factor'])} at step {att.loss_step})"
            return f"{which} moment {d['name']} {how}"

        out.append(f"Adam's update: {part(f, 'first')}; {part(s, 'second')}.")
    lr = _lr_words(att)
    if lr and att.verdict != "led":
        out.append(lr)
    return out


def attribution_dicts(atts: list[Attribution]) -> list[dict]:
    """JSON-ready summaries (the moved table as records)."""
    out = []
    for a in atts:
        out.append(
            {
                "event": a.event,
                "start_step": a.start_step,
                "loss_step": a.loss_step,
                "first_searched": a.first_searched,
                "verdict": a.verdict,
                "origin": a.origin,
                "first_groups": a.first_groups,
                "spread": [list(p) for p in a.spread],
                "moments": a.moments,
                "held_out": a.held_out,
                "lr": a.lr,
                "n_series": a.n_series,
                "n_judged": a.n_judged,
                "moved": a.moved.to_dict("records"),
                "text": attribution_lines(a),
            }
        )
    return out
