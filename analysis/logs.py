"""Read a user's own training log, whatever wrote it, into one tidy DataFrame.

Accepted: a gradvar run directory (records/), a CSV/TSV/whitespace table, JSONL (or a JSON list of records),
a Hugging Face `trainer_state.json` (or a checkpoint folder holding one), and TensorBoard event files or
folders. Columns get canonical names (step, loss, grad_norm, lr, seqlen; the rest snake_cased). Any bad input
raises LogError with a one-line message naming the file; NaN/inf losses are kept (they are divergence events).
Each reader here only turns its format into raw rows; analysis.log_table names, parses and checks them.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pandas as pd

from .log_table import EVAL_PREFIX, LogData, _numeric_frame, _short_list, canonical_names, finalize, snake
# LogError and the TensorBoard reader live in .tfevents (no import back from there); importing them here also
# keeps `from analysis.logs import LogError, read_scalars, find_event_files` working.
from .tfevents import LogError, _valid_tfrecord_header, find_event_files, read_scalars


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
