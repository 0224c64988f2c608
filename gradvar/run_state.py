"""The run's host state between steps: tokens so far, the sequence length of each recent step, the events and
other tables' rows waiting for the next flush, and the spike detector and best probe loss the flushed rows
continue (saved in checkpoints, so a resumed run goes on with them).

Only its own methods change it: the monitor advances it once per step and adds events and rows; the row
builder (gradvar.rows) remembers the flushed steps, runs the detector and reads the labels here.
"""

from __future__ import annotations

import math

import numpy as np

from .spikes import OnlineSpikeDetector, SpikeRule

SEQLEN_MEMORY = 4096
"""Steps whose (tokens, seqlen) are remembered to label late events and probe rows (older ones fall back to
the latest values)."""


class RunState:
    def __init__(self, rule: SpikeRule):
        self._detector = OnlineSpikeDetector(rule)
        self._probe_best = math.inf
        self._tokens = 0
        self._last_seqlen = None
        self._seqlen_by_step: dict[int, tuple] = {}
        self._events: list[dict] = []  # rows waiting for the next flush
        self._rows: list[tuple[str, dict]] = []

    @property
    def tokens(self) -> int:
        """Training tokens consumed so far, all ranks (the latest step's `tokens`)."""
        return self._tokens

    @property
    def last_seqlen(self):
        """The sequence length of the latest flushed step (None before the first flush)."""
        return self._last_seqlen

    def advance(self, tokens: int) -> None:
        """Tokens consumed so far: after a step closed, or at a resume that knows the count (the records)."""
        self._tokens = int(tokens)

    def remember(self, step: int, tokens: int, seqlen) -> None:
        """A flushed step's labels, for the events and probe rows that name it later."""
        self._seqlen_by_step[step] = (tokens, seqlen)
        self._last_seqlen = seqlen
        if len(self._seqlen_by_step) > 2 * SEQLEN_MEMORY:  # bounded: one entry per step grew without end
            recent = sorted(self._seqlen_by_step)[-SEQLEN_MEMORY:]
            self._seqlen_by_step = {s: self._seqlen_by_step[s] for s in recent}

    def labels(self, step: int) -> tuple:
        """(tokens, seqlen) of `step`: as flushed, else the latest values."""
        return self._seqlen_by_step.get(step, (self._tokens, self._last_seqlen))

    def add_event(self, step: int, kind: str, message: str, value: float = math.nan) -> None:
        """An events row, written at the next flush (rank 0)."""
        tokens, seqlen = self.labels(step)
        event = {
            "step": int(step),
            "tokens": int(tokens),
            "seqlen": nan_if_none(seqlen),
            "kind": kind,
            "value": float(value),
            "message": message,
        }
        self._events.append(event)

    def add_row(self, table: str, step: int, row: dict) -> None:
        """A row of another table (e.g. `evals`), labelled with the step, the tokens so far and the latest
        sequence length."""
        self._rows.append((table, {"step": step, "tokens": self._tokens, "seqlen": self._last_seqlen, **row}))

    def take_waiting(self) -> list[tuple[str, dict]]:
        """(table, row) of the events, then the other rows, added since the last call."""
        out = [("events", e) for e in self._events] + self._rows
        self._events, self._rows = [], []
        return out

    def spike(self, loss: float) -> dict:
        """The spike detector's verdict on the next flushed loss (gradvar.spikes.OnlineSpikeDetector.update)."""
        return self._detector.update(loss)

    def probe_ratio(self, loss: float) -> float:
        """The probe loss over the best probe loss before it (1 at the first), NaN for NaN; keeps the best."""
        if np.isnan(loss):
            return math.nan
        ratio = 1.0 if math.isinf(self._probe_best) else (loss / self._probe_best if np.isfinite(loss) else math.inf)
        if np.isfinite(loss):
            self._probe_best = min(self._probe_best, float(loss))
        return ratio

    def state_dict(self) -> dict:
        return {"detector": self._detector.state_dict(), "probe_best": self._probe_best, "tokens": self._tokens}

    def load_state_dict(self, state: dict) -> None:
        self._detector.load_state_dict(state["detector"])
        self._probe_best = float(state["probe_best"])
        self._tokens = int(state["tokens"])


def nan_if_none(v):
    return np.nan if v is None else float(v)
