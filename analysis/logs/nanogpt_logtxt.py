"""build-nanogpt's log/log.txt: one 'step split value' row per line ('12 train 9.78', '0 val 10.93',
'0 hella 0.2413'). 'train' rows are the training steps; the other splits go to the eval table."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import LogError
from .table import LogData, _numeric_frame, finalize

_ROW = re.compile(r"^\s*(\d+)\s+([A-Za-z_]+)\s+(\S+)\s*$")


def looks_like_logtxt(text: str) -> bool:
    """Most non-blank lines are 'step split value' and one split is 'train'."""
    lines = [ln for ln in text.splitlines()[:400] if ln.strip()]
    rows = [m for m in map(_ROW.match, lines) if m]
    return len(rows) >= 2 and 2 * len(rows) > len(lines) and any(m.group(2) == "train" for m in rows)


def load_logtxt(p: Path, text: str) -> LogData:
    train, labels, evals = [], [], {}
    for no, line in enumerate(text.splitlines(), start=1):
        m = _ROW.match(line)
        if not m:
            continue
        step, split, value = int(m.group(1)), m.group(2), m.group(3)
        if split == "train":
            train.append((step, value))
            labels.append(f"line {no}")
        else:
            name = "val_loss" if split == "val" else f"val_{split}"
            evals.setdefault(step, {"step": step})[name] = value
    if not train:
        raise LogError(f"{p}: no 'train' rows (build-nanogpt log.txt)")
    log = finalize(pd.DataFrame(train, columns=["step", "loss"], dtype=object), labels, str(p), "nanogpt_logtxt")
    if evals:
        log.eval_df = _numeric_frame(pd.DataFrame(list(evals.values())), keep_step=True)
    return log
