"""Read a user's own training log, whatever wrote it, into one tidy DataFrame.

Accepted: a gradvar run directory (records/), a CSV/TSV/whitespace table, JSONL (or a JSON list of records),
a Hugging Face `trainer_state.json` (or a checkpoint folder holding one), and TensorBoard event files or
folders. Columns get canonical names (step, loss, grad_norm, lr, seqlen; the rest snake_cased). Any bad input
raises LogError with a one-line message naming the file; NaN/inf losses are kept (they are divergence events).
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# LogError and the TensorBoard reader live in .tfevents (no import back from there); importing them here also
# keeps `from analysis.logs import LogError, read_scalars, find_event_files` working.
from .tfevents import LogError, _valid_tfrecord_header, find_event_files, read_scalars

ALIASES = {
    "step": ("step", "global_step", "iteration", "iter", "it", "train/global_step", "trainer/global_step", "steps"),
    "loss": ("loss", "train_loss", "train/loss", "training_loss", "lm_loss", "loss/train", "train/lm_loss"),
    "grad_norm": ("grad_norm", "gradient_norm", "train/grad_norm", "total_norm", "gnorm", "grad_norm/total"),
    "lr": ("lr", "learning_rate", "train/learning_rate", "train/lr"),
    "seqlen": ("seqlen", "seq_len", "sequence_length", "seq_length", "train/seqlen"),
}
MISSING = {"", "na", "n/a", "null", "none"}  # an empty cell: this row does not carry the value
NAN_TOKENS = {"nan", "+nan", "-nan"}  # a logged NaN: a real (divergent) value
EVAL_PREFIX = re.compile(r"^(eval|val|valid|validation|test)(_|$)")
FORMATS = ("gradvar", "csv", "jsonl", "hf_trainer_state", "tensorboard", "dataframe")


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


def canonical_names(columns) -> list[str]:
    """Canonical name for each column, in order; the first alias in priority order wins, names stay unique."""
    keys = [snake(c) for c in columns]
    out: list = [None] * len(keys)
    for canon, aliases in _ALIAS_KEYS.items():
        hits = [(aliases.index(k), i) for i, k in enumerate(keys) if k in aliases and out[i] is None]
        if hits:
            out[min(hits)[1]] = canon
    taken = set(o for o in out if o)
    for i, k in enumerate(keys):
        if out[i] is None:
            base = k or f"col{i + 1}"
            name, n = base, 2
            while name in taken:
                name, n = f"{base}_{n}", n + 1
            out[i] = name
            taken.add(name)
    return out


def load_log(path) -> LogData:
    """Read any supported log; raises LogError (one line, naming the file) on bad input."""
    p = Path(path)
    if not p.exists():
        raise LogError(f"{p}: no such file or directory")
    if p.is_dir():
        return _load_dir(p)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise LogError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if not data.strip():
        raise LogError(f"{p}: empty file")
    if "tfevents" in p.name or _valid_tfrecord_header(data):
        return _load_tensorboard(p, [p])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LogError(f"{p}: unknown format (binary, not UTF-8 text nor a TensorBoard event file)") from None
    if "\x00" in text:
        raise LogError(f"{p}: unknown format (binary data, not a text log)")
    head = text.lstrip()[:1]
    if head in "{[" or p.suffix.lower() in (".json", ".jsonl", ".ndjson"):
        return _load_json_text(p, text)
    return _load_csv_text(p, text)


def from_frame(df: pd.DataFrame, source: str = "<DataFrame>", fmt: str = "dataframe") -> LogData:
    """Validate and normalise an in-memory DataFrame exactly as a CSV log would be."""
    if not isinstance(df, pd.DataFrame):
        raise LogError(f"{source}: expected a DataFrame, got {type(df).__name__}")
    raw = df.reset_index(drop=True).copy()
    labels = [f"row {i}" for i in range(len(raw))]
    return finalize(raw, labels, source, fmt)


def _load_dir(p: Path) -> LogData:
    if (p / "records").is_dir():
        return _load_gradvar(p)
    if p.name == "records" and (p.parent / "records").is_dir():
        return _load_gradvar(p.parent)
    if (p / "trainer_state.json").is_file():
        return load_log(p / "trainer_state.json")
    # A HF output_dir: the newest checkpoint holds the whole log history.
    states = sorted(p.glob("checkpoint-*/trainer_state.json"), key=lambda q: _trailing_int(q.parent.name))
    if states:
        return load_log(states[-1])
    events = find_event_files(p)
    if events:
        return _load_tensorboard(p, events)
    raise LogError(f"{p}: unknown format (folder has no gradvar records/, trainer_state.json "
                   "or TensorBoard event files)")


def _trailing_int(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else -1


def _load_gradvar(p: Path) -> LogData:
    from gradvar.records import read_records

    errors: list = []
    try:
        tables = read_records(p, tables=["steps", "evals", "events"], errors=errors)
    except Exception as exc:  # pyarrow raises many types; the user needs one line, not a traceback
        raise LogError(f"{p}: cannot read gradvar records ({type(exc).__name__}: {exc})") from None
    steps = tables.get("steps", pd.DataFrame())
    if steps is None or steps.empty:
        raise LogError(f"{p}: gradvar run has no rows in records/steps yet")
    log = finalize(steps, [f"steps row {i}" for i in range(len(steps))], str(p), "gradvar")
    log.notes.extend(errors)
    evals = tables.get("evals")
    if evals is not None and not evals.empty:
        ev = evals.rename(columns={"val_loss": "eval_loss", "val_ppl": "eval_ppl"})
        log.eval_df = _numeric_frame(ev, keep_step=True)
    events = tables.get("events")
    if events is not None and not events.empty and "kind" in events:
        counts = events["kind"].astype(str).value_counts()
        log.notes.append("gradvar events: " + ", ".join(f"{k} x{v}" for k, v in counts.items()))
    return log


def _load_tensorboard(p: Path, files) -> LogData:
    long, notes = read_scalars(files, root=p if p.is_dir() else p.parent)
    if long.empty:
        raise LogError(f"{p}: TensorBoard file(s) hold no scalar values")
    is_eval = long["tag"].map(lambda t: any(EVAL_PREFIX.match(snake(part)) for part in t.split("/")))
    # read_scalars left one value per (step, tag), so pivot() keeps logged NaNs (pivot_table would drop them).
    train = long[~is_eval].pivot(index="step", columns="tag", values="value").reset_index()
    train.columns = [str(c) for c in train.columns]
    names = canonical_names(train.columns)
    if "loss" not in names:
        tags = sorted(long["tag"].unique())
        raise LogError(f"{p}: no loss column (TensorBoard tags found: {_short_list(tags)})")
    loss_tag = train.columns[names.index("loss")]
    has_loss = set(long.loc[long["tag"] == loss_tag, "step"])
    train = train[train["step"].isin(has_loss)].reset_index(drop=True)
    log = finalize(train, [f"step {s}" for s in train["step"]], str(p), "tensorboard")
    log.notes.extend(notes)
    if is_eval.any():
        ev = long[is_eval].pivot(index="step", columns="tag", values="value").reset_index()
        ev.columns = ["step"] + [snake(c) for c in ev.columns[1:]]
        log.eval_df = ev
    return log


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
        raise LogError(f"{p}: unknown format (JSON but neither a trainer_state.json with log_history nor JSONL; "
                       f"top level: {keys})")
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
    log = _records_to_log(p, rows, labels, "jsonl")
    log.notes[:0] = notes
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


def _load_csv_text(p: Path, text: str) -> LogData:
    lines = ["" if ln.lstrip().startswith("#") else ln for ln in text.splitlines()]
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise LogError(f"{p}: empty file (only comments)")
    header_line = lines[first]
    delim = max(",\t;|", key=header_line.count)
    if header_line.count(delim) == 0:
        delim = None  # whitespace-separated, e.g. a golden-loss file of 'step loss' lines
    try:
        table = _split_rows(lines, first, delim)
    except (csv.Error, ValueError) as exc:
        raise LogError(f"{p}: cannot parse as CSV ({exc})") from None
    if not table:
        raise LogError(f"{p}: empty file (no values, only separators)")
    (_, header), body = table[0], table[1:]
    notes = []
    if all(_is_number(f) for f in header):
        # No header: read as 'step loss [more...]', the usual golden-loss layout.
        body = table
        names = ["step", "loss"] if len(header) > 1 else ["loss"]
        header = names + [f"col{i + 1}" for i in range(2, len(header))]
        notes.append("no header line: columns read as " + ", ".join(header))
    rows, labels = [], []
    for no, fields in body:
        if len(fields) > len(header):
            if not {"step", "loss"} & set(canonical_names(header)):  # prose, markdown, ...: not a table at all
                raise LogError(f"{p}: unknown format (not a table with step and loss columns)")
            raise LogError(f"{p}: line {no} has {len(fields)} fields but the header has {len(header)}")
        rows.append(fields + [None] * (len(header) - len(fields)))  # a cut-off last line is padded
        labels.append(f"line {no}")
    if not rows:
        raise LogError(f"{p}: no data rows (only a header: {_short_list(header)})")
    raw = pd.DataFrame(rows, columns=range(len(header)), dtype=object)
    raw.columns = header
    log = finalize(raw, labels, str(p), "csv")
    log.notes[:0] = notes
    return log


def _split_rows(lines: list, first: int, delim) -> list:
    """[(line_number, fields)] for non-blank lines from `first` on."""
    if delim is None:
        return [(i + 1, ln.split()) for i, ln in enumerate(lines) if i >= first and ln.strip()]
    reader = csv.reader(io.StringIO("\n".join(lines[first:])), delimiter=delim, strict=False)
    out = []
    for fields in reader:
        if any(f.strip() for f in fields):
            out.append((first + reader.line_num, [f.strip() for f in fields]))
    return out


def _is_number(s) -> bool:
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def _short_list(items, n: int = 20) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "") if items else "none"


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
    if not np.isfinite(loss).any():
        raise LogError(f"{source}: loss is NaN/inf in all {len(loss)} rows")
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
