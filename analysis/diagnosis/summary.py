"""The short paragraph at the top of a diagnosis: the log, its class and kind, the largest events first."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..logs import LogData
from .advice import _warns, _worst


def build_summary(diag, log: LogData) -> str:
    """A short paragraph about a Diagnosis: what the log is, the run class, the events, the best signal."""
    f, sp = diag.facts, diag.spikes
    fmt = {
        "hf_trainer_state": "HF trainer_state.json",
        "tensorboard": "TensorBoard",
        "gradvar": "gradvar run",
        "csv": "CSV",
        "jsonl": "JSONL",
        "dataframe": "DataFrame",
        "llamafactory": "LLaMA-Factory trainer_log.jsonl",
        "stdout": "console output",
        "nanogpt_logtxt": "build-nanogpt log.txt",
        "wandb": "W&B CSV export",
        "lightning": "Lightning metrics.csv",
    }.get(log.fmt, log.fmt)
    where = f"{Path(log.source).name} ({fmt}): {f['n_entries']} log entries, steps {f['first_step']}-{f['last_step']}"
    if f.get("no_loss_all"):
        return (
            f"{where}, {_every(diag.interval)}. Run class: none, no loss recorded: pass `mon.step(loss=...)` "
            "(the loss never reached the monitor; the other columns are read in the advice)."
        )
    head = f"{where}, {_every(diag.interval)}. Run class: {diag.run_class}.{_kind_words(f)}"
    if not len(sp):
        return head + " No spike events."
    kinds = sp["kind"].value_counts()
    words = (("spike", "single spike(s)"), ("sustained_rise", "sustained rise(s)"), ("nonfinite", "NaN/inf event(s)"))
    parts = [f"{kinds.get(k, 0)} {w}" for k, w in words if kinds.get(k, 0)]
    worst = _worst(sp)
    peak = "NaN/inf" if worst["kind"] == "nonfinite" else f"{worst['peak_ratio']:.2f}x its level before"
    txt = (
        f"{head} {len(sp)} event(s): {', '.join(parts)}; the largest is a {worst['kind'].replace('_', ' ')} at "
        f"step {worst['peak_step']} ({peak}, {worst['severity']})."
    )
    g = worst.get("grad_norm_rel")
    if g is not None and np.isfinite(g):
        txt += f" grad_norm at the largest event: {g:.2f}x its recent level."
    if len(sp) > 1:
        top = sp.sort_values("rise", ascending=False).head(3)
        txt += (
            " Largest: "
            + "; ".join(f"step {r.peak_step} (+{r.rise:.3g}, {r.peak_ratio:.2f}x)" for r in top.itertuples())
            + "."
        )
    top = f.get("top_signal")
    if _warns(top):
        txt += f" Best leading signal: {top['signal']} (AUROC {top['auroc']:.2f})."
    elif top:
        txt += " No logged signal reliably leads the spikes."
    return txt


def _every(k: float) -> str:
    return "one every step" if k == 1 else f"one every {k:g} steps"


def _kind_words(f) -> str:
    kind = (f.get("run_kind") or {}).get("kind")
    words = {"from_scratch": "pre-training from scratch", "fine_tune": "a fine-tune"}.get(kind)
    if words:
        return f" Kind: {words} ({f['run_kind']['evidence'][0]})."
    why = (f.get("run_kind") or {}).get("undecided")
    return f" Kind: cannot tell from scratch from fine-tune ({why})." if why else ""
