"""JSON logs: a Hugging Face trainer_state.json, JSONL (one object per line) or a JSON list of records.

LLaMA-Factory's trainer_log.jsonl is JSONL with `current_steps`; with several GPUs each step can be written once
per rank: analysis.logs.llamafactory merges those rows before the table is checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..errors import LogError
from .llamafactory import is_llamafactory, merge_ranks
from .table import LogData, _numeric_frame, _short_list, finalize


def _load_json_text(p: Path, text: str) -> LogData:
    try:
        whole = json.loads(text)
    except (ValueError, RecursionError):
        whole = None
    if isinstance(whole, dict) and "log_history" in whole:
        return _load_hf(p, whole)
    if isinstance(whole, list):
        if not all(isinstance(r, dict) for r in whole):
            raise LogError(f"{p}: unknown format (a JSON list, but not of objects)")
        return _records_to_log(p, [_flatten(r) for r in whole], [f"record {i}" for i in range(len(whole))], "jsonl")
    if whole is not None and not (isinstance(whole, dict) and len(text.strip().splitlines()) == 1):
        keys = _short_list(list(whole)) if isinstance(whole, dict) else type(whole).__name__
        raise LogError(
            f"{p}: unknown format (JSON but neither a trainer_state.json with log_history nor JSONL; top level: {keys})"
        )
    return _load_jsonl(p, text)


def _load_jsonl(p: Path, text: str) -> LogData:
    rows, labels, notes = [], [], []
    lines = text.splitlines()
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            # A run killed mid-write leaves half a last line; everything before it is good.
            if no == len(lines) and not text.endswith("\n"):
                notes.append(f"line {no} is cut off (run killed while writing?): ignored")
                continue
            raise LogError(f"{p}: line {no} is not valid JSON") from None
        if not isinstance(obj, dict):
            raise LogError(f"{p}: line {no} is not a JSON object (got {type(obj).__name__})")
        rows.append(_flatten(obj))
        labels.append(f"line {no}")
    fmt, resumes = "jsonl", []
    if is_llamafactory(rows):
        rows, labels, merged, resumes = merge_ranks(rows, labels)
        fmt, notes = "llamafactory", notes + merged
    log = _records_to_log(p, rows, labels, fmt)
    log.notes[:0] = notes
    if resumes:
        log.meta["resume_steps"] = resumes
    return log


def _flatten(obj: dict, prefix: str = "", depth: int = 0) -> dict:
    """{'train': {'loss': 1}} -> {'train/loss': 1}; lists and deeper nesting are dropped (not scalars)."""
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            if depth < 4:
                out.update(_flatten(v, key + "/", depth + 1))
        elif not isinstance(v, list):
            out[key] = v
    return out


def _records_to_log(p: Path, rows: list, labels: list, fmt: str) -> LogData:
    if not rows:
        raise LogError(f"{p}: no data rows")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    raw = pd.DataFrame([[r.get(c) for c in cols] for r in rows], columns=range(len(cols)), dtype=object)
    raw.columns = cols
    return finalize(raw, labels, str(p), fmt)


def _load_hf(p: Path, state: dict) -> LogData:
    hist = state.get("log_history")
    if not isinstance(hist, list) or not hist:
        raise LogError(f"{p}: trainer_state.json has an empty log_history")
    train, tl, evals = [], [], []
    for i, r in enumerate(hist):
        if not isinstance(r, dict):
            continue
        if "loss" in r:
            train.append(_flatten(r))
            tl.append(f"log_history[{i}]")
        elif any(str(k).startswith("eval_") for k in r):
            evals.append(_flatten(r))
    if not train:
        raise LogError(f"{p}: no training rows (no log_history entry has a 'loss')")
    log = _records_to_log(p, train, tl, "hf_trainer_state")
    if evals:
        ev = pd.DataFrame(evals)
        if "step" in ev:
            log.eval_df = _numeric_frame(ev, keep_step=True)
    keys = ("logging_steps", "train_batch_size", "max_steps", "global_step", "num_train_epochs", "epoch", "eval_steps")
    log.meta = {k: state[k] for k in keys if isinstance(state.get(k), (int, float)) and not isinstance(state[k], bool)}
    return log
