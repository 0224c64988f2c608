"""Diagnose a user's own (possibly divergent) run from its log: spike events, early-warning signals, advice.

Loss events (spikes, sustained rises, NaN/inf) come from analysis.diagnosis.events: gradvar.spikes' rules, each
event also standing out from the log's own noise and passing the absolute floor. The run's kind (pre-training
from scratch or fine-tuning) is read from the log in analysis.diagnosis.kind. Every other numeric column is
then ranked by how well it moves *before* the events (lead time, hit rate,
AUROC of "an event starts within the next `horizon` entries"), raw and detrended, in analysis.diagnosis.signals.
The advice and summary are worded in analysis.diagnosis.advice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gradvar.spikes import SpikeRule

from ..defaults import HORIZON
from ..logs import LogData, LogError, from_frame, load_log
from .advice import SNIPPET, build_advice
from .attribution import attribute_records, attribution_dicts
from .context import log_context, masked_nan_losses, no_loss_rows
from .events import SPIKE_COLUMNS, annotate, classify, find_spikes, sub_floor_rise  # noqa: F401 (SPIKE_COLUMNS re-exported)
from .facts import collect_facts
from .log_advice import needs_recording
from .signals import rank_signals, signal_variants
from .summary import build_summary

DEFAULT_HORIZON = HORIZON
"""Log entries ahead in which a signal must warn of an event: the early-warning rule's horizon."""
SUSTAIN = 7
"""Rolling-median window of the sustained-rise detector, and the fewest entries a sustained rise lasts."""


@dataclass
class Diagnosis:
    """What diagnose() found; every table is tidy (one row per event / per signal / per log entry)."""

    source: str
    run_class: str
    """'stable', 'spiky' or 'diverged'; 'no_loss' for a gradvar run whose loss never reached the monitor."""
    spikes: pd.DataFrame
    """One row per event: SPIKE_COLUMNS; kind is 'spike', 'sustained_rise' or 'nonfinite'."""
    signals: pd.DataFrame
    """One row per other signal, best first: signals.SIGNAL_COLUMNS (its best variant: raw, dlog or
    log_ratio_median)."""
    advice: list
    summary: str
    entries: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per log entry: step, loss, loss_ratio, ref_loss, trend, event (0 = none)."""
    signal_variants: pd.DataFrame = field(default_factory=pd.DataFrame)
    """All variants of all signals (the rows `signals` picked from)."""
    notes: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    """The numbers the advice was built from (learning-rate warmup, grad-norm findings, eval trend, ...)."""
    interval: float = 1.0
    horizon: int = DEFAULT_HORIZON
    attribution: list = field(default_factory=list)
    """For a gradvar run directory: what moved first, one analysis.records.attribution.Attribution per event."""

    @property
    def record_more(self) -> bool:
        """Whether the output shows how to record the signals the log lacks (advice.needs_recording)."""
        return needs_recording(self.facts)

    def to_dict(self) -> dict:
        """JSON-ready: NaN and inf become None."""
        return _jsonable(
            {
                "source": self.source,
                "run_class": self.run_class,
                "summary": self.summary,
                "advice": self.advice,
                "spikes": self.spikes.to_dict("records"),
                "signals": self.signals.to_dict("records"),
                "notes": self.notes,
                "facts": self.facts,
                "interval": self.interval,
                "horizon": self.horizon,
                "attribution": attribution_dicts(self.attribution),
                "snippet": SNIPPET,
            }
        )


def diagnose(
    df_or_path,
    *,
    rule: SpikeRule = SpikeRule(),
    horizon: int = DEFAULT_HORIZON,
    sustain: int = SUSTAIN,
    vocab_size: int | None = None,
    seq_axis: bool | None = None,
) -> Diagnosis:
    """Diagnose a log given as a path, a LogData or a DataFrame with step and loss columns.

    vocab_size: the model's vocabulary, when the log does not name it (for the run's kind). seq_axis=False: the
    model has no sequence-length axis (an RNN over a fixed unroll, a CNN), so no Sequence Length Warmup advice.
    """
    log = as_log(df_or_path)
    horizon, sustain = max(1, int(horizon)), max(3, int(sustain))
    ctx = log_context(log, vocab_size, seq_axis)
    unrecorded = no_loss_rows(log)
    no_loss = bool(unrecorded.all())
    if unrecorded.any() and not no_loss:
        # Steps whose loss was never given are not NaN losses: the loss analysis reads the other steps only.
        log = LogData(
            log.df[~unrecorded].reset_index(drop=True), log.source, log.fmt, log.eval_df, log.meta, list(log.notes)
        )
        log.notes.append(
            f"no loss was given to the monitor at {int(unrecorded.sum())} steps: left out of the loss analysis"
        )
    masked = masked_nan_losses(log.df)
    if masked.any():
        df = log.df.copy()
        df.loc[masked, "loss"] = np.nan
        log = LogData(df, log.source, log.fmt, log.eval_df, log.meta, list(log.notes))
        log.notes.append(
            f"loss 0.0 with grad_norm NaN/inf at {int(masked.sum())} entries: read as NaN losses (a loss of 0 has "
            "a finite gradient; the HF Trainer logs 0.0 for an interval whose every step was NaN)"
        )
    with np.errstate(all="ignore"):
        entries, spikes, notes = find_spikes(log.df, rule, sustain)
        if "lr" in log.df:
            entries["lr"] = log.df["lr"].to_numpy(np.float64)
        spikes = annotate(spikes, log.df)
        variants = signal_variants(log.df, entries, spikes, horizon)
        signals = rank_signals(variants)
        if no_loss:  # nothing to find in a loss that was never recorded; the other columns are still read
            spikes, entries["event"] = spikes.iloc[0:0], 0
            variants = variants.iloc[0:0]
            signals = signals.iloc[0:0]
        facts = collect_facts(log, entries, spikes, signals, rule, ctx)
        facts["no_loss_entries"], facts["no_loss_all"] = int(unrecorded.sum()), no_loss
        run_class = "no_loss" if no_loss else classify(spikes)
        if not len(spikes) and (log.df["loss"] >= 0).all():
            facts["sub_floor_rise"] = sub_floor_rise(
                log.df["loss"].to_numpy(np.float64), rule, sustain, log.df["step"].to_numpy(np.int64)
            )
    log_notes = list(log.notes)
    if no_loss:  # the reader's "loss is NaN/inf" note would read as a blow-up: the loss was never given
        log_notes = [n for n in log_notes if not n.startswith("the loss is NaN/inf in all")]
        log_notes.append(f"no loss was given to the monitor at any of the {len(log.df)} steps")
    diag = Diagnosis(
        source=log.source,
        run_class=run_class,
        spikes=spikes,
        signals=signals,
        advice=[],
        summary="",
        entries=entries,
        signal_variants=variants,
        notes=log_notes + notes,
        facts=facts,
        interval=log.interval,
        horizon=horizon,
    )
    if log.fmt == "gradvar" and len(spikes):  # the run's per-group and probe records say what moved first
        diag.attribution, more = attribute_records(log.source, spikes)
        diag.notes += more
    diag.advice = build_advice(diag, rule)
    diag.summary = build_summary(diag, log)
    return diag


def as_log(obj) -> LogData:
    """A LogData from a path, a LogData or a DataFrame."""
    if isinstance(obj, LogData):
        return obj
    if isinstance(obj, pd.DataFrame):
        return from_frame(obj)
    if isinstance(obj, (str, Path)):
        return load_log(obj)
    raise LogError(f"<{type(obj).__name__}>: expected a path, a LogData or a DataFrame")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj if obj is None or isinstance(obj, str) else str(obj)
