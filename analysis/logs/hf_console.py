"""The Hugging Face Trainer's console output: one Python dict per logging step, in the middle of tqdm bars.

     24%|██▍       | 2566/10485 [3:15:22<10:03:32,  4.57s/it]
    {'loss': 4.2653, 'grad_norm': 0.8, 'learning_rate': 0.00017678285394504535, 'epoch': 0.24}
    {'eval_loss': 0.10173556208610535, 'eval_f1': 0.8726977875593652, 'epoch': 1.57}
    {'train_runtime': 512.3, 'train_loss': 0.31, 'epoch': 3.0}

The dicts carry no step. It comes, in this order, from:
  1. the tqdm bar printed before each dict (the Trainer logs right after the bar counts the step): used when
     every dict but the first has a bar of the same total before it, the counts go up, and a first dict
     without a bar sits one logging interval before the second;
  2. a `logging_steps` the user passes (`gradvar diagnose --logging-steps N`): entry k is step k * N;
  3. the `epoch` fractions, when the paste holds the Trainer's banner (`Num Epochs = E`, `Total optimization
     steps = T`): step = epoch * T / E, used only when every such product is a whole number to within 0.01
     (older versions log the epoch in full; rounded to two decimals, as newer ones do, it gives no exact step);
  4. the order: entry k is step k, and the log's notes say so.
Dicts cut by the terminal (no closing brace) are skipped and counted; eval dicts become the eval table at the
step of the training entry before them; the final summary (train_runtime, train_loss) is not a step.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import LogError
from .json_logs import _records_to_log
from .table import LogData, _numeric_frame

_DICT = re.compile(r"\{\s*'[^{}]*\}")
_OPEN = re.compile(r"\{\s*'(?:loss|eval_loss)'")
_ITEM = re.compile(r"'([^']+)'\s*:\s*('[^']*'|[^,}]+)")
_BAR = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")
_EPOCHS = re.compile(r"Num Epochs\s*=\s*([\d,]+)")
_TOTAL = re.compile(r"Total optimization steps\s*=\s*([\d,]+)")


def looks_like_hf_console(text: str, sample: int = 400) -> bool:
    """Whether the first `sample` lines hold at least two `{'loss': ...}` dicts."""
    head = "\n".join(text.splitlines()[:sample])
    return sum(1 for m in _DICT.finditer(head) if "loss" in _items(m.group(0))) >= 2


def load_hf_console(p: Path, text: str, logging_steps: int | None = None) -> LogData:
    train, evals, cut, bar = [], [], 0, None  # bar: the last tqdm (count, total) seen since the previous dict
    bars_before: list = []
    for no, line in enumerate(text.splitlines(), start=1):
        pos = 0
        for m in _DICT.finditer(line):
            bar = _last_bar(line[pos : m.start()]) or bar
            d = _items(m.group(0))
            pos = m.end()
            if "loss" in d:
                train.append((no, d))
                bars_before.append(bar)
                bar = None
            elif any(k.startswith("eval_") for k in d):
                evals.append((len(train), d))
        rest = line[pos:]
        cut += len(_OPEN.findall(rest))
        bar = _last_bar(rest) or bar
    if not train:
        raise LogError(f"{p}: no {{'loss': ...}} lines (Hugging Face Trainer console output)")
    per_epoch = _steps_per_epoch(text)
    epochs = [d.get("epoch") for _, d in train]
    steps, how = _steps(bars_before, len(train), logging_steps, epochs, per_epoch)
    rows = [{"step": s, **d} for s, (_, d) in zip(steps, train)]
    log = _records_to_log(p, rows, [f"line {no}" for no, _ in train], "hf_console")
    log.notes.insert(0, f"steps from {how}")
    if cut:
        log.notes.append(f"{cut} dict(s) cut off by the terminal (no closing brace): skipped")
    log.meta["steps_from"] = how
    if logging_steps:
        log.meta["logging_steps"] = logging_steps
    if evals:
        ev = [{"step": steps[i - 1], **d} for i, d in evals if i > 0]  # at the training entry before it
        if ev:
            log.eval_df = _numeric_frame(pd.DataFrame(ev), keep_step=True)
    return log


def _items(text: str) -> dict:
    """{'loss': 2.31, 'grad_norm': nan} -> {'loss': '2.31', 'grad_norm': 'nan'} (newer versions quote values)."""
    return {k: v.strip().strip("'") for k, v in _ITEM.findall(text)}


def _last_bar(text: str):
    found = _BAR.findall(text)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def _steps(bars: list, n: int, logging_steps, epochs: list, per_epoch) -> tuple[list, str]:
    counted = _steps_from_bars(bars)
    if counted is not None:
        return counted, f"the tqdm bar before each dict (every {counted[1] - counted[0] if n > 1 else 1} steps)"
    if logging_steps:
        return [logging_steps * (k + 1) for k in range(n)], f"logging_steps={logging_steps} (entry k is step k x N)"
    from_epochs = _steps_from_epochs(epochs, per_epoch)
    if from_epochs is not None:
        return from_epochs, f"epoch x {per_epoch:g} steps per epoch (the Trainer's banner)"
    return list(range(1, n + 1)), (
        "the order of the entries (1, 2, ...): the dicts carry no step; pass --logging-steps N for the trainer's steps"
    )


def _steps_per_epoch(text: str):
    """Total optimization steps / Num Epochs from the Trainer's '***** Running training *****' banner."""
    e, s = _EPOCHS.search(text), _TOTAL.search(text)
    if not (e and s):
        return None
    epochs, total = int(e.group(1).replace(",", "")), int(s.group(1).replace(",", ""))
    return total / epochs if epochs > 0 and total > 0 else None


def _steps_from_epochs(epochs: list, per_epoch):
    """Exact steps from full-precision epoch fractions, or None."""
    if not per_epoch or any(e is None for e in epochs):
        return None
    try:
        prod = [float(e) * per_epoch for e in epochs]
    except ValueError:
        return None
    steps = [round(x) for x in prod]
    exact = all(abs(x - s) < 0.01 for x, s in zip(prod, steps))
    return steps if exact and steps[0] > 0 and all(b > a for a, b in zip(steps, steps[1:])) else None


def _steps_from_bars(bars: list):
    """Steps from the bars, or None when they do not give one exact step per dict."""
    if len(bars) < 2 or any(b is None for b in bars[1:]):
        return None
    totals = {b[1] for b in bars if b is not None}
    counts = [b[0] for b in bars[1:]]
    if len(totals) != 1 or any(b <= a for a, b in zip(counts, counts[1:])):
        return None
    if bars[0] is None:
        gaps = {b - a for a, b in zip(counts, counts[1:])}
        if len(gaps) != 1 or counts[0] - gaps.pop() < 0:
            return None
        first = counts[0] - (counts[1] - counts[0]) if len(counts) > 1 else None
        return None if first is None else [first] + counts
    return [bars[0][0]] + counts if bars[0][0] < counts[0] else None
