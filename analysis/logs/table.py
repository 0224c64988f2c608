"""The format-independent half of reading a log: raw rows (any dtypes) in, a checked LogData out.

Every reader ends in finalize(): canonical column names, value parsing, the checks that name the first bad
row, and LogData itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import LogError

ALIASES = {
    "step": (
        "step",
        "global_step",
        "iteration",
        "iter",
        "it",
        "train/global_step",
        "trainer/global_step",
        "steps",
        "current_steps",
        "_step",
    ),
    "loss": (
        "loss",
        "train_loss",
        "train/loss",
        "training_loss",
        "lm_loss",
        "loss/train",
        "train/lm_loss",
        "train_loss_step",
        "loss_step",
        "train/samples/train_loss",
    ),
    "grad_norm": ("grad_norm", "gradient_norm", "train/grad_norm", "total_norm", "gnorm", "grad_norm/total", "norm"),
    "lr": ("lr", "learning_rate", "train/learning_rate", "train/lr", "lr_abs", "train/samples/lr"),
    "seqlen": ("seqlen", "seq_len", "sequence_length", "seq_length", "train/seqlen"),
}
MISSING = {"", "na", "n/a", "null", "none"}  # an empty cell: this row does not carry the value
NAN_TOKENS = {"nan", "+nan", "-nan"}  # a logged NaN: a real (divergent) value
EVAL_PREFIX = re.compile(r"^(eval|val|valid|validation|test)(_|$)")
FORMATS = (
    "gradvar",
    "csv",
    "jsonl",
    "llamafactory",
    "hf_trainer_state",
    "tensorboard",
    "dataframe",
    "lightning",
    "wandb",
    "nanogpt_logtxt",
    "stdout",
    "hf_console",
    "console",
)


@dataclass
class LogData:
    """One training log, normalised."""

    df: pd.DataFrame
    """One row per logged training step: `step` (int64, strictly increasing), `loss`, other numeric columns."""
    source: str
    """The path it came from."""
    fmt: str
    """One of FORMATS."""
    eval_df: pd.DataFrame | None = None
    """Evaluation rows (step plus eval metrics), when the log has them."""
    meta: dict = field(default_factory=dict)
    """Run facts the log states (HF: logging_steps, train_batch_size, max_steps, epoch)."""
    notes: list = field(default_factory=list)
    """Things noticed while reading (truncated last line, dropped columns)."""

    @property
    def interval(self) -> float:
        """Median number of steps between log entries."""
        d = np.diff(self.df["step"].to_numpy())
        return float(np.median(d)) if len(d) else 1.0


def snake(name) -> str:
    """'Train/Grad Norm' -> 'train_grad_norm'."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


_ALIAS_KEYS = {canon: [snake(a) for a in names] for canon, names in ALIASES.items()}


def names_step_or_loss(columns) -> bool:
    """Whether any column name is a step or loss alias (linear: canonical_names is not, on 20,000 words)."""
    wanted = set(_ALIAS_KEYS["step"]) | set(_ALIAS_KEYS["loss"])
    return any(snake(c) in wanted for c in columns)


def canonical_names(columns) -> list[str]:
    """Canonical name for each column, in order; the first alias in priority order wins, names stay unique."""
    keys = [snake(c) for c in columns]
    out: list = [None] * len(keys)
    for canon, aliases in _ALIAS_KEYS.items():
        hits = [(aliases.index(k), i) for i, k in enumerate(keys) if k in aliases and out[i] is None]
        if hits:
            out[min(hits)[1]] = canon
    taken = {o for o in out if o}
    for i, k in enumerate(keys):
        if out[i] is None:
            base = k or f"col{i + 1}"
            name, n = base, 2
            while name in taken:
                name, n = f"{base}_{n}", n + 1
            out[i] = name
            taken.add(name)
    return out


def _is_missing(v) -> bool:
    if v is None or v is pd.NA:
        return True
    return isinstance(v, str) and v.strip().lower() in MISSING


def _to_float(v) -> float | None:
    """A float (NaN and inf kept), or None when the value is not a number."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)):
        try:
            return float(v)
        except OverflowError:  # a JSON integer beyond float range
            return math.inf if v > 0 else -math.inf
    if isinstance(v, str):
        t = v.strip().lower()
        if t in NAN_TOKENS:
            return math.nan
        try:
            return float(t)
        except ValueError:
            return None
    return None


def _column_floats(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, missing, bad) for one raw column."""
    if pd.api.types.is_bool_dtype(s) and s.dtype != object:  # a typed flag column (gradvar's spike_ratio)
        s = s.astype(np.float64)
    if s.dtype != object and pd.api.types.is_numeric_dtype(s):
        vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
        return vals, np.zeros(len(s), bool), np.zeros(len(s), bool)
    obj = s.astype(object).to_numpy()
    n = len(obj)
    try:  # fast path for the common case, plain numbers; anything it cannot parse is looked at one by one
        num = pd.to_numeric(pd.Series(obj, dtype=object), errors="coerce")
        vals = np.array(num.to_numpy(np.float64, na_value=np.nan), dtype=np.float64)  # writable copy
    except (OverflowError, TypeError, ValueError):
        vals = np.full(n, np.nan)
    slow = np.isnan(vals) | np.fromiter((isinstance(v, (bool, np.bool_)) for v in obj), bool, n)
    missing, bad = np.zeros(n, bool), np.zeros(n, bool)
    for i in np.flatnonzero(slow):
        if _is_missing(obj[i]):
            missing[i], vals[i] = True, np.nan
            continue
        c = _to_float(obj[i])
        bad[i], vals[i] = c is None, np.nan if c is None else c
    return vals, missing, bad


def _fmt_value(v) -> str:
    r = repr(v) if isinstance(v, str) else str(v)
    return r if len(r) <= 40 else r[:37] + "..."


def finalize(raw: pd.DataFrame, labels: list, source: str, fmt: str) -> LogData:
    """Rename, check and convert raw rows (any dtypes) into a LogData; the checks name the first bad row."""
    raw = raw.copy()
    found = list(raw.columns)
    raw.columns = canonical_names(found)
    for need in ("step", "loss"):
        if need not in raw.columns:
            raise LogError(f"{source}: no {need} column (columns found: {_short_list(found)})")
    loss, loss_missing, loss_bad = _column_floats(raw["loss"])
    aside = raw[loss_missing]  # rows without a loss are eval or summary rows, not training steps
    keep = ~loss_missing
    if not keep.any():
        raise LogError(f"{source}: the loss column is empty")
    raw, loss, loss_bad = raw[keep].reset_index(drop=True), loss[keep], loss_bad[keep]
    labels = [lab for lab, k in zip(labels, keep) if k]
    steps = _checked_steps(raw["step"], labels, source)
    if loss_bad.any():
        i = int(np.argmax(loss_bad))
        raise LogError(f"{source}: non-numeric loss {_fmt_value(raw['loss'].iloc[i])} at {labels[i]}")
    _check_order(steps, labels, source)
    df = pd.DataFrame({"step": steps.astype(np.int64), "loss": loss})
    dropped = []
    for col in raw.columns:
        if col in ("step", "loss"):
            continue
        vals, missing, bad = _column_floats(raw[col])
        if missing.all():
            continue  # an empty column (other rows' metric)
        if 2 * bad.sum() > (~missing).sum():
            dropped.append(col)  # mostly text: a label column, not a metric
            continue
        df[col] = vals  # NaN kept: an all-NaN grad_norm (fp16 overflow) is itself a finding
    notes = [f"non-numeric columns ignored: {_short_list(dropped)}"] if dropped else []
    if not np.isfinite(loss).any():  # a run that diverged before its first logged step: the NaN is the finding
        notes.append(f"the loss is NaN/inf in all {len(loss)} rows")
    return LogData(df=df, source=source, fmt=fmt, eval_df=_eval_rows(aside, notes), notes=notes)


def _eval_rows(aside: pd.DataFrame, notes: list):
    """Rows without a loss: their eval/val/test columns make the eval table; the rest is only counted."""
    if not len(aside):
        return None
    cols = [c for c in aside.columns if c == "step" or EVAL_PREFIX.match(c)]
    ev = _numeric_frame(aside.loc[:, cols], keep_step=True) if len(cols) > 1 else pd.DataFrame()
    if ev.empty or len(ev.columns) < 2:
        notes.append(f"{len(aside)} row(s) without a loss value skipped")
        return None
    return ev


def _checked_steps(col: pd.Series, labels: list, source: str) -> np.ndarray:
    vals, missing, bad = _column_floats(col)
    for mask, what in ((missing, "missing step"), (bad, "non-numeric step")):
        if mask.any():
            i = int(np.argmax(mask))
            raise LogError(f"{source}: {what} {_fmt_value(col.iloc[i]) if what[0] == 'n' else ''} at {labels[i]}")
    odd = ~np.isfinite(vals) | (np.abs(vals) > 2.0**53)
    odd |= np.where(odd, False, vals != np.floor(np.where(odd, 0, vals)))
    if odd.any():
        i = int(np.argmax(odd))
        raise LogError(f"{source}: step {_fmt_value(col.iloc[i])} at {labels[i]} is not a whole number")
    return vals


def _check_order(steps: np.ndarray, labels: list, source: str) -> None:
    d = np.diff(steps)
    if (d <= 0).any():
        i = int(np.argmax(d <= 0)) + 1
        s, prev = int(steps[i]), int(steps[i - 1])
        if s == prev:
            raise LogError(f"{source}: step {s} is duplicated ({labels[i - 1]} and {labels[i]})")
        raise LogError(f"{source}: steps out of order: step {s} at {labels[i]} comes after step {prev}")


def _numeric_frame(raw: pd.DataFrame, keep_step: bool) -> pd.DataFrame:
    """Numeric columns of `raw` (snake_cased), rows with a valid step, sorted; empty columns dropped."""
    raw = raw.copy()
    raw.columns = canonical_names(list(raw.columns))
    out = {}
    for col in raw.columns:
        vals, _, bad = _column_floats(raw[col])
        if not bad.all() and np.isfinite(vals).any():
            out[col] = vals
    df = pd.DataFrame(out)
    if keep_step:
        if "step" not in df:
            return pd.DataFrame()
        df = df[np.isfinite(df["step"])].sort_values("step", kind="stable").reset_index(drop=True)
        df["step"] = df["step"].astype(np.int64)
    return df


def _short_list(items, n: int = 20) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "") if items else "none"
