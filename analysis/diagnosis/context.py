"""What a log says about its run beyond the loss: the vocabulary size, a recurrent model (no sequence-length
axis to warm up), the precision, visible gradient clipping, and which steps of a gradvar run recorded no loss.

Advice is checked against these facts, so it never asks for what the log already shows (clipping on, grad_norm
logged every step) nor suggests a remedy the model cannot take (Sequence Length Warmup for an LSTM). Words are
read from the log's own text (console output, a pasted log) and its file name; the user's flags override them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..logs import LogData

TEXT_BYTES = 8 << 20
"""Text read from a log file for its words (the head of a larger file; configs are printed first)."""
# Not `ntokens` or `num_tokens`: fairseq and TRL log those as tokens per batch or tokens seen, not a vocabulary.
VOCAB_RE = re.compile(r"\b(?:vocab(?:ulary)?[ _-]?size|n_vocab)\b[\"']?\s*[:=]?\s*[\"']?(\d{1,7})\b", re.IGNORECASE)
RECURRENT_RE = re.compile(r"\b(LSTM|GRU|RNN_TANH|RNN_RELU|RNN|RNNModel|char-rnn|recurrent)\b", re.IGNORECASE)
MIXED_RE = re.compile(
    r"\b(fp16|float16|bf16|bfloat16|amp|autocast|GradScaler|loss[ _-]?scale|mixed[ _-]precision)\b",
    re.IGNORECASE,
)
LM_RE = re.compile(r"\b(tokens?|tok/s|tokens/s(?:ec)?|ppl|perplexity|vocab\w*|lm[ _]loss|n_vocab)\b", re.IGNORECASE)
"""Words only a language model's log has: its first loss below ln(17) then means a trained model, not a
classifier of a few classes starting near ln(k) (ln 2 = 0.69)."""
FP32_RE = re.compile(r"\b(fp32|float32|full precision)\b", re.IGNORECASE)
CLIP_COLUMN = re.compile(r"clip")
NO_LOSS_NOTE = "no loss reached the monitor"
"""The words of gradvar's `no_loss` note (gradvar.notes.no_loss): the loss was not given, not NaN."""


def log_text(source: str) -> str:
    """The head of the log's text when it is a readable text file, else '' (a run directory, binary events)."""
    p = Path(source)
    try:
        if not p.is_file():
            return ""
        raw = p.read_bytes()[:TEXT_BYTES]
    except OSError:
        return ""
    if b"\0" in raw[:4096]:
        return ""  # TensorBoard event files and other binaries say nothing in words
    return raw.decode("utf-8", errors="replace")


def log_context(log: LogData, vocab_size=None, seq_axis=None) -> dict:
    """{vocab_size, vocab_source, recurrent, seq_axis, seq_axis_source, precision, precision_source, clipping}."""
    text = log_text(log.source)
    words = text + "\n" + Path(log.source).name
    ctx = {"vocab_size": None, "vocab_source": None}
    if vocab_size:
        ctx.update(vocab_size=int(vocab_size), vocab_source="--vocab-size")
    elif log.meta.get("vocab_size"):
        ctx.update(vocab_size=int(log.meta["vocab_size"]), vocab_source="the log's config")
    else:
        sizes = [int(m) for m in VOCAB_RE.findall(text) if int(m) >= 2]
        if sizes:
            ctx.update(vocab_size=sizes[0], vocab_source="the log's text")
    lm = LM_RE.search(text) or next((c for c in log.df.columns if LM_RE.search(c.replace("_", " "))), None)
    ctx["language_model"] = (lm.group(1) if hasattr(lm, "group") else lm) if lm else None
    rec = RECURRENT_RE.search(words)
    ctx["recurrent"] = rec.group(1) if rec else None
    if seq_axis is not None:
        ctx["seq_axis"], ctx["seq_axis_source"] = bool(seq_axis), "--no-seq-axis" if not seq_axis else "the caller"
    elif rec:
        ctx["seq_axis"], ctx["seq_axis_source"] = False, f"the log names a recurrent model ({rec.group(1)})"
    else:
        ctx["seq_axis"], ctx["seq_axis_source"] = None, None
    ctx.update(_precision(log.df, text))
    ctx["clipping"] = clipping_seen(log.df)
    return ctx


def _precision(df: pd.DataFrame, text: str) -> dict:
    """'mixed' when the log shows fp16/bf16/a loss scale, 'fp32' when it says so or shows none of them."""
    if any("loss_scale" in c or c == "scale" for c in df.columns):
        return {"precision": "mixed", "precision_source": "a loss-scale column"}
    m = MIXED_RE.search(text)
    if m:
        return {"precision": "mixed", "precision_source": f"the log says {m.group(1)!r}"}
    m = FP32_RE.search(text)
    if m:
        return {"precision": "fp32", "precision_source": f"the log says {m.group(1)!r}"}
    return {"precision": "fp32", "precision_source": "no loss scale, fp16 or bf16 anywhere in the log"}


def clipping_seen(df: pd.DataFrame):
    """Evidence that gradient clipping is on, in words, or None.

    grad_norm_clipped (gradvar's norm after clipping) counts when it is below grad_norm at some entry: equal at
    every entry is what an unclipped run records too. Any other column named for clipping (a clip coefficient,
    a count of clipped steps) counts when it holds a finite non-zero value.
    """
    for c in df.columns:
        if not CLIP_COLUMN.search(c):
            continue
        v = df[c].to_numpy(np.float64)
        if c == "grad_norm_clipped" and "grad_norm" in df:
            g = df["grad_norm"].to_numpy(np.float64)
            hit = np.isfinite(v) & np.isfinite(g) & (v < g * (1 - 1e-6))
            if hit.any():
                return f"grad_norm_clipped is below grad_norm at {int(hit.sum())} of {len(v)} entries"
            continue
        if (np.isfinite(v) & (v != 0)).any():
            return f"the log has a {c} column"
    return None


def no_loss_rows(log: LogData, events: pd.DataFrame | None = None) -> np.ndarray:
    """Entries of a gradvar run whose loss was never given to the monitor (NaN there is 'not recorded').

    gradvar writes one `no_loss` note per run when a step ends without a loss; such a step has loss NaN and no
    nonfinite_loss count (a loss that was given and was NaN counts 1 there).
    """
    x = log.df["loss"].to_numpy(np.float64)
    if log.fmt != "gradvar" or not log.meta.get("no_loss_note"):
        return np.zeros(len(x), bool)
    flagged = log.df["nonfinite_loss"].to_numpy(np.float64) if "nonfinite_loss" in log.df else np.zeros(len(x))
    return np.isnan(x) & ~(np.nan_to_num(flagged) > 0)


def masked_nan_losses(df: pd.DataFrame) -> np.ndarray:
    """Entries whose logged loss 0.0 stands for NaN/inf: the gradient norm there is NaN/inf.

    A loss that is really 0 has a zero, finite gradient. The HF Trainer's default logging_nan_inf_filter skips
    NaN/inf step losses when it sums the interval's loss, and an interval with nothing but NaN steps sums to
    0: it logs `'loss': 0.0` beside `'grad_norm': nan`.
    """
    if "grad_norm" not in df:
        return np.zeros(len(df), bool)
    x, g = df["loss"].to_numpy(np.float64), df["grad_norm"].to_numpy(np.float64)
    return (x == 0) & ~np.isfinite(g)
