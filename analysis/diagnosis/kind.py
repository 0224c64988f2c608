"""Is the log a pre-training run from scratch or a fine-tune? Advice depends on it (SLW and LR warmup are
pre-training remedies; a fine-tune's spike more often means data, LR or a resume).

Evidence, each named in the result so the advice can cite it:
  * the first logged loss against ln(vocabulary): a randomly initialised LM starts near ln(V) (10.8 for
    GPT-2's 50257 tokens, 10.4 for LLaMA's 32000, 2.83 for a 17-character alphabet); a pretrained model starts
    far below it. With V known (the log names it, or --vocab-size) the loss is compared with ln(V); without it
    every plausible V counts, byte and character vocabularies (17-256 symbols, ln V = 2.83-5.55) included, so
    a first loss between ln(17) and SCRATCH_FIRST_LOSS fits an untrained character model and a fine-tune alike
    and decides nothing (the result says so). Only when the log starts at the run's start (within its second
    logging interval): an excerpt from iteration 2920 of a pre-training run starts low too;
  * below ln(17), the first loss means a trained model only for a language model (the log names tokens,
    perplexity or a vocabulary): a classifier of k classes starts near ln(k), 0.69 for two;
  * LoRA/PEFT or reward/accuracy/eval columns, which pre-training logs rarely have;
  * the log's format: LLaMA-Factory and TRL logs are fine-tunes by construction.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SCRATCH_FIRST_LOSS = 6.5
"""Without a known vocabulary, a first logged loss above this (nats) is an untrained LM: a pretrained model
starts below ~4, and no byte/character vocabulary (ln 256 = 5.55) starts this high."""
SMALLEST_VOCAB = 17
"""The smallest vocabulary taken as plausible (a character model of a small alphabet); below ln(17) - a
little no untrained model starts."""
BELOW_SMALLEST = 0.15
"""Nats below ln(SMALLEST_VOCAB) a first loss must be to rule out every plausible untrained start (the first
entry can be a few steps in)."""
SCRATCH_FRAC = 0.6
"""With V known: a first loss above this fraction of ln(V) is an untrained model (6.5 nats for 50257 tokens;
an untrained model can start above ln V, 12.4 for GPT-2 in a real Megatron log)."""
FINETUNE_FRAC = 0.37
"""With V known: a first loss below this fraction of ln(V) is a trained model (4.0 nats for 50257 tokens)."""
FINETUNE_COLUMNS = (
    "lora",
    "peft",
    "adapter",
    "reward",
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
# Not plain "accuracy": a classifier trained from scratch logs it too (Keras' `accuracy`); TRL's token accuracy
# of a chat fine-tune is named in full.
FINETUNE_FORMATS = ("llamafactory",)


def run_kind(df: pd.DataFrame, fmt: str, eval_df, vocab_size=None, vocab_source=None, lm_word=None) -> dict:
    """{'kind': 'from_scratch' | 'fine_tune' | 'unknown', 'evidence': [short phrases], 'undecided': phrase}."""
    x, steps = df["loss"].to_numpy(np.float64), df["step"].to_numpy(np.int64)
    fin = np.flatnonzero(np.isfinite(x))
    first = float(x[fin[0]]) if len(fin) else float("nan")
    gap = float(np.median(np.diff(steps))) if len(steps) > 1 else 1.0
    midrun = bool(len(fin) and steps[fin[0]] > 2 * max(gap, 1.0) + 1)
    if midrun:
        first = float("nan")  # the log starts mid-run: its first loss says nothing about the initialisation
    evidence_ft, evidence_scratch = [], []
    undecided = _first_loss_evidence(first, vocab_size, vocab_source, evidence_scratch, evidence_ft, lm_word)
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
        return {"kind": "from_scratch", "evidence": evidence_scratch, "undecided": None}
    if evidence_ft and not evidence_scratch:
        return {"kind": "fine_tune", "evidence": evidence_ft, "undecided": None}
    if evidence_ft and evidence_scratch:
        undecided = "the evidence conflicts"
    elif not undecided:
        undecided = (
            f"the log starts mid-run (step {int(steps[fin[0]])}), so its first loss says nothing of the initialisation"
            if midrun
            else "no finite loss"
            if not len(fin)
            else "no evidence either way"
        )
    return {"kind": "unknown", "evidence": evidence_scratch + evidence_ft, "undecided": undecided}


def _first_loss_evidence(first: float, vocab, source, scratch: list, ft: list, lm_word=None):
    """Add the first loss's evidence to `scratch` or `ft`; return why it decides nothing, or None."""
    if not np.isfinite(first):
        return None
    if vocab and vocab >= 2:
        ln_v = math.log(vocab)
        where = f"ln({vocab}) = {ln_v:.3g}, vocabulary from {source}"
        if first >= SCRATCH_FRAC * ln_v:
            scratch.append(f"first logged loss {first:.3g} nats, near {where}: an untrained model's start")
        elif first < FINETUNE_FRAC * ln_v:
            ft.append(f"first logged loss {first:.3g} nats, far below {where}: a trained model's start")
        else:
            return f"the first logged loss {first:.3g} nats is neither near nor far below {where}"
        return None
    if first >= SCRATCH_FIRST_LOSS:
        scratch.append(f"first logged loss {first:.3g} nats, near ln(vocabulary) of an untrained LM")
    elif first < math.log(SMALLEST_VOCAB) - BELOW_SMALLEST and not lm_word:
        return (
            f"cannot tell from the first logged loss alone: {first:.3g} nats fits a trained language model and "
            "a classifier of a few classes near its start (ln 2 = 0.69), and the log names no tokens; pass "
            "--vocab-size for a language model"
        )
    elif first < math.log(SMALLEST_VOCAB) - BELOW_SMALLEST:
        ft.append(
            f"first logged loss {first:.3g} nats, below ln({SMALLEST_VOCAB}) = {math.log(SMALLEST_VOCAB):.3g}, where "
            f"an untrained model of even a small character vocabulary starts (a language model: the log says "
            f"{lm_word!r})"
        )
    else:
        v = int(round(math.exp(first)))
        return (
            f"cannot tell from the first logged loss alone: {first:.3g} nats is ln({v}), where an untrained model "
            f"with a {v}-symbol (byte/character) vocabulary starts, and also where a fine-tune can start; "
            "pass --vocab-size"
        )
    return None
