"""What moved first: for each loss spike event of a run, every recorded series judged by one rule
(analysis.records.departure), with the step it first left its level, relative to the loss's own departure.

Per event (its start, peak and end steps from diagnose's spike rules):
- the loss's departure step L: the event's start, moved earlier while the loss at the step before also departs
  by the rule (a climb that began before the event's threshold was crossed);
- the search range: from L - lookback (not before the previous event's end, so the previous spike's own signals
  are not taken for leaders) to the event's peak;
- each series' first departure in that range; lead = L - its step (> 0: it moved before the loss; 0: with it).
  A departure before L counts only if the series stays out of its level up to L;
- leaders: the series with lead >= 1, ranked by lead, then by how far out (z);
- the origin: the parameter group whose per-group series left its level first, when exactly one did; the
  spread: the other groups, in the order their series left their level, up to the peak;
- the first/second-moment split of Adam's update: adam_m_norm beside adam_vhat_l1 (or adam_v_l1);
- the batch test: the held-out probe loss is measured after step L - 1 on the very parameters the training
  loss of step L sees. If it stayed at its level while the training loss left it, the parameters were fine and
  the batch of step L was not (`verdict` 'batch', whatever moved before); with no leader, a change of the
  batch's shape (seqlen, batch_size) at L says the same. Otherwise 'led' when some series moved before the
  loss, else 'none': no recorded signal led this spike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..defaults import HORIZON
from .attribution_series import Series, collect_series, loss_series
from .departure import MIN_HISTORY, MIN_RISE, K, departs, first_departure, level_before

LOOKBACK = HORIZON
"""Steps before the loss's departure in which a series may have moved first (the early-warning horizon)."""
MAX_EVENTS = 20
"""Events attributed per run, the largest first (the rest are counted in a note)."""
HELD_OUT_RECENT = 5
"""The batch test compares the held-out loss with the median of its last records before it."""
MOMENT_SERIES = ("adam_m_norm", ("adam_vhat_l1", "adam_v_l1", "adam_vhat_max", "adam_v_max"))
MOVED_COLUMNS = ("name", "role", "group", "stat", "step", "prev_step", "lead", "z", "rise", "factor", "scale", "sparse")


@dataclass
class Attribution:
    """What moved first for one event."""

    event: int
    start_step: int
    peak_step: int
    end_step: int
    loss_step: int
    """The step the training loss itself first left its level."""
    first_searched: int
    moved: pd.DataFrame
    """One row per series that left its level between first_searched and the peak: MOVED_COLUMNS, ranked by
    lead (steps before loss_step), then z. rise: above the level on the series' scale; factor: value / level
    (NaN for a signed series or a loss in nats, whose rise is in nats)."""
    verdict: str
    """'batch' (the held-out loss of the parameters the loss of loss_step saw stayed at its level, or, with no
    leader, the batch's shape changed with the loss: the batch of loss_step was the cause), 'led' (some series
    moved before the loss), or 'none' (no recorded signal led this spike)."""
    origin: str | None = None
    """The one parameter group whose series moved first (among the leaders), else None."""
    first_groups: list = field(default_factory=list)
    """All groups whose series moved at the earliest leading step (several: no single origin)."""
    spread: list = field(default_factory=list)
    """[(group, step)] the other groups in the order they moved, up to the peak."""
    moments: dict | None = None
    """{'first': {...}, 'second': {...}} of Adam's update, when either moved by the peak."""
    held_out: dict | None = None
    """The batch test: probe loss at loss_step (measured after the previous update) and whether it moved."""
    lr: dict = field(default_factory=dict)
    """The scheduled LR at loss_step, its fraction of the run's peak, the phase ('warmup', 'peak', 'decay')."""
    window: pd.DataFrame = field(default_factory=pd.DataFrame)
    """For the figure: step, name, value, rel (value / its level just before it moved) of the loss and the
    leading series (or, with none, those that moved with the loss), from lookback steps before the search."""
    n_series: int = 0
    n_judged: int = 0
    """Series with enough history (MIN_HISTORY recorded values) to be judged somewhere in the range."""

    @property
    def leaders(self) -> pd.DataFrame:
        return self.moved[self.moved["lead"] >= 1]

    @property
    def with_loss(self) -> pd.DataFrame:
        return self.moved[self.moved["lead"] == 0]


def _loss_departure(loss: Series | None, start: int, floor: int, lookback: int) -> int:
    """The event's start, moved back while the loss at the step before also departs (and has a record)."""
    if loss is None:
        return start
    L = start
    while floor < L - 1 and start - lookback <= L - 1:
        i = int(np.searchsorted(loss.step, L - 1))
        if i >= len(loss.step) or loss.step[i] != L - 1 or not departs(loss.y, i)[0]:
            break
        L -= 1
    return L


def _moved_row(s: Series, dep, L: int) -> dict:
    return {
        "name": s.name,
        "role": s.role,
        "group": s.group,
        "stat": s.stat,
        "step": dep.step,
        "prev_step": dep.prev_step,
        "lead": L - dep.step,
        "z": dep.z,
        "rise": dep.rise,
        "factor": math.exp(dep.rise) if s.scale == "log" else math.nan,
        "scale": s.scale,
        "sparse": s.sparse,
    }


def _factor_at(s: Series, step: int, ref_step: int) -> float:
    """value at `step` / the level before `ref_step` (NaN when either is not recorded or the scale is signed)."""
    i = int(np.searchsorted(s.step, step))
    j = int(np.searchsorted(s.step, ref_step))
    if s.scale != "log" or i >= len(s.step) or s.step[i] != step or j < MIN_HISTORY:
        return math.nan
    return math.exp(float(s.y[i]) - level_before(s.y, j).level)


def _moments(by_name: dict, moved: pd.DataFrame, L: int, first: int) -> dict | None:
    m_name, v_names = MOMENT_SERIES
    v_name = next((n for n in v_names if n in by_name), None)
    if m_name not in by_name or v_name is None:
        return None
    rows = moved.set_index("name") if len(moved) else pd.DataFrame()
    out = {}
    for key, name in (("first", m_name), ("second", v_name)):
        hit = name in rows.index
        out[key] = {
            "name": name,
            "step": int(rows.loc[name, "step"]) if hit else None,
            "factor": float(rows.loc[name, "factor"]) if hit else _factor_at(by_name[name], L, first),
        }
    if out["first"]["step"] is None and out["second"]["step"] is None:
        return None
    return out


def _held_out(by_name: dict, L: int) -> dict | None:
    s = by_name.get("probe_loss")
    if s is None:
        return None
    i = int(np.searchsorted(s.step, L))
    if i >= len(s.step) or s.step[i] != L:
        return {"recorded": False}
    hit, z, lv = departs(s.y, i)
    if lv.n < MIN_HISTORY:
        return {"recorded": False}
    # "At its level" is stricter than "did not depart": within half the rule's z of its level, and no more than
    # half the rule's rise above its own last HELD_OUT_RECENT records (no trend carried: not worse than lately).
    rise = float(s.y[i]) - float(np.median(s.y[max(0, i - HELD_OUT_RECENT) : i]))
    level = not hit and z <= K / 2 and rise < MIN_RISE / 2
    return {"recorded": True, "moved": hit, "at_level": level, "z": z, "rise": rise, "step": L - 1}


def _lr_context(steps: pd.DataFrame, L: int) -> dict:
    if "lr" not in steps:
        return {}
    st, lr = steps["step"].to_numpy(np.int64), steps["lr"].to_numpy(np.float64)
    ok = np.isfinite(lr)
    i = int(np.searchsorted(st, L))
    if not ok.any() or i >= len(st) or st[i] != L or not ok[i]:
        return {}
    peak_i = int(np.nanargmax(np.where(ok, lr, -np.inf)))
    peak = float(lr[peak_i])
    rising = i > 0 and ok[i - 1] and lr[i] > lr[i - 1]
    phase = "warmup" if rising and i <= peak_i and lr[i] < peak else "peak" if lr[i] >= 0.999 * peak else "decay"
    return {"lr": float(lr[i]), "frac": float(lr[i] / peak) if peak > 0 else math.nan, "phase": phase}


def attribute_event(
    series: list[Series], loss: Series | None, steps: pd.DataFrame, event: dict, floor: int, lookback: int = LOOKBACK
) -> Attribution:
    """The attribution of one event (a dict or row with event, start_step, peak_step, end_step); `floor`: the
    previous event's last step (the search starts after it)."""
    start, peak, end = int(event["start_step"]), int(event["peak_step"]), int(event["end_step"])
    L = _loss_departure(loss, start, floor, lookback)
    first = max(L - lookback, floor + 1)
    rows, judged = [], 0
    for s in series:
        dep, ok = first_departure(s.step, s.y, first, max(peak, L), L)
        judged += ok
        if dep is not None:
            rows.append(_moved_row(s, dep, L))
    moved = pd.DataFrame(rows, columns=list(MOVED_COLUMNS))
    if len(moved):
        moved = moved.sort_values(["lead", "z"], ascending=[False, False], kind="stable").reset_index(drop=True)
    att = Attribution(
        event=int(event.get("event", 0)),
        start_step=start,
        peak_step=peak,
        end_step=end,
        loss_step=L,
        first_searched=first,
        moved=moved,
        verdict="none",
        n_series=len(series),
        n_judged=judged,
    )
    by_name = {s.name: s for s in series}
    _groups(att)
    att.moments = _moments(by_name, moved, L, first)
    att.lr = _lr_context(steps, L)
    att.held_out = _held_out(by_name, L)
    att.window = _window(att, by_name, loss, lookback)
    # The held-out test first: when the parameters the loss of step L saw were fine on held-out data, what moved
    # in them before did not make this spike, whatever it was; the batch of step L did.
    if (att.held_out or {}).get("at_level") or (not len(att.leaders) and (att.with_loss["role"] == "input").any()):
        att.verdict = "batch"
        att.origin, att.first_groups, att.spread = None, [], []  # no group started what the batch did
    elif len(att.leaders):
        att.verdict = "led"
    return att


FIGURE_SERIES = 5
"""Series drawn beside the loss in an event's figure."""


def _window(att: Attribution, by_name: dict, loss: Series | None, lookback: int) -> pd.DataFrame:
    """Tidy rows (step, name, value, rel) around the event for its figure: positive series only (their
    level is a value to divide by)."""
    shown = att.leaders if len(att.leaders) else att.with_loss
    names = [n for n in shown["name"] if by_name[n].scale == "log"][:FIGURE_SERIES]
    lo, hi = att.first_searched - lookback, att.end_step + lookback
    frames = []
    moved_at = dict(zip(att.moved["name"], att.moved["step"]))
    for s in ([loss] if loss is not None else []) + [by_name[n] for n in names]:
        # its level just before it moved (or before the loss did): the line sits at 1 until it leaves it
        j = int(np.searchsorted(s.step, min(moved_at.get(s.name, att.loss_step), att.loss_step)))
        base = level_before(s.y, j).level if j else math.nan
        keep = (s.step >= lo) & (s.step <= hi)
        rel = np.exp(s.y[keep] - base) if s.scale == "log" and np.isfinite(base) else np.full(keep.sum(), np.nan)
        frames.append(pd.DataFrame({"step": s.step[keep], "name": s.name, "value": s.x[keep], "rel": rel}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["step", "name", "value", "rel"])


def _groups(att: Attribution) -> None:
    """Origin (one group moving first among the leaders), and the order the other groups moved in."""
    per = att.moved[(att.moved["role"] == "model") & (att.moved["group"] != "all")]
    if not len(per):
        return
    firsts = per.groupby("group")["step"].min().sort_values(kind="stable")
    lead = att.leaders
    lead = lead[(lead["role"] == "model") & (lead["group"] != "all")]
    if len(lead):
        d0 = int(lead["step"].min())
        att.first_groups = sorted(firsts[firsts == d0].index)
        att.origin = att.first_groups[0] if len(att.first_groups) == 1 else None
        att.spread = [(g, int(s)) for g, s in firsts.items() if s > d0]


def attribute_run(steps: pd.DataFrame, spikes: pd.DataFrame, layers=None, probes=None, lookback: int = LOOKBACK):
    """(attributions in event order, notes) for a run's tables and its events (diagnose's spike table: event,
    start_step, peak_step, end_step, rise). NaN/inf events are attributed like the others."""
    notes = []
    if not len(spikes) or "loss" not in steps:
        return [], notes
    steps = steps.sort_values("step", kind="stable").reset_index(drop=True)
    series = collect_series(steps, layers, probes)
    loss = loss_series(steps)
    ev = spikes.sort_values("start_step", kind="stable")
    keep = set(ev.sort_values("rise", ascending=False, na_position="first").head(MAX_EVENTS)["event"])
    if len(ev) > MAX_EVENTS:
        notes.append(f"what moved first: the {MAX_EVENTS} largest of {len(ev)} events attributed")
    out, floor = [], -(10**18)
    for _, e in ev.iterrows():
        if e["event"] in keep:
            out.append(attribute_event(series, loss, steps, e, floor, lookback))
        floor = int(e["end_step"])
    return out, notes
