"""Is the log a pre-training run from scratch or a fine-tune? Advice depends on it (SLW and LR warmup are
pre-training remedies; a fine-tune's spike more often means data, LR or a resume).

Evidence, each named in the result so the advice can cite it:
  * the first logged loss against ln(vocabulary): a randomly initialised LM starts near ln(V) (10.8 for
    GPT-2's 50257 tokens, 10.4 for LLaMA's 32000); a pretrained model starts far below it. Only when the log
    starts at the run's start (within its second logging interval): an excerpt from iteration 2920 of a
    pre-training run starts low too;
  * LoRA/PEFT or reward/accuracy/eval columns, which pre-training logs rarely have;
  * the log's format: LLaMA-Factory and TRL logs are fine-tunes by construction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCRATCH_FIRST_LOSS = 6.5
"""A first logged loss above this (nats) is an untrained LM; below 4 a pretrained one (or not an LM)."""
FINETUNE_COLUMNS = (
    "lora",
    "peft",
    "adapter",
    "reward",
    "accuracy",
    "rewards",
    "kl",
    "mean_token_accuracy",
    "chosen",
    "rejected",
    "wer",
    "cer",
    "bleu",
    "rouge",
)
FINETUNE_FORMATS = ("llamafactory",)


def run_kind(df: pd.DataFrame, fmt: str, eval_df) -> dict:
    """{'kind': 'from_scratch' | 'fine_tune' | 'unknown', 'evidence': [short phrases]}."""
    x, steps = df["loss"].to_numpy(np.float64), df["step"].to_numpy(np.int64)
    fin = np.flatnonzero(np.isfinite(x))
    first = float(x[fin[0]]) if len(fin) else float("nan")
    gap = float(np.median(np.diff(steps))) if len(steps) > 1 else 1.0
    if len(fin) and steps[fin[0]] > 2 * max(gap, 1.0) + 1:
        first = float("nan")  # the log starts mid-run: its first loss says nothing about the initialisation
    evidence_ft, evidence_scratch = [], []
    if first >= SCRATCH_FIRST_LOSS:
        evidence_scratch.append(f"first logged loss {first:.3g} nats, near ln(vocabulary) of an untrained LM")
    elif first < 4.0:
        evidence_ft.append(f"first logged loss {first:.3g} nats, far below an untrained LM's ~10")
    cols = [
        c
        for c in list(df.columns) + list(eval_df.columns if eval_df is not None else [])
        if any(w in c.split("_") or c.startswith(w) for w in FINETUNE_COLUMNS)
    ]
    if cols:
        evidence_ft.append("fine-tuning columns: " + ", ".join(sorted(set(cols))[:3]))
    lr = df["lr"].to_numpy(np.float64) if "lr" in df else np.array([])
    if np.isfinite(lr).any() and 0 < np.nanmax(lr) <= 5e-5:
        evidence_ft.append(
            f"peak LR {np.nanmax(lr):.2g}, a fine-tuning LR (pre-training from scratch uses ~1e-4 to 1e-3)"
        )
    if fmt in FINETUNE_FORMATS:
        evidence_ft.append(f"a {fmt} log (a fine-tuning framework)")
    if evidence_scratch and not evidence_ft:
        return {"kind": "from_scratch", "evidence": evidence_scratch}
    if evidence_ft and not evidence_scratch:
        return {"kind": "fine_tune", "evidence": evidence_ft}
    return {"kind": "unknown", "evidence": evidence_scratch + evidence_ft}
