"""Read a user's own training log, whatever wrote it, into one tidy DataFrame.

Accepted: a gradvar run directory (records/), a CSV/TSV/whitespace table (Lightning's metrics.csv and W&B
history exports among them), JSONL (LLaMA-Factory's trainer_log.jsonl among them) or a JSON list of records,
a Hugging Face `trainer_state.json` (or a checkpoint folder holding one), TensorBoard event files or folders
(a HF `runs/` folder too), the HF Trainer's console dicts, console output of nanoGPT, llm.c, build-nanogpt and
Megatron-LM, and any other console log whose lines hold a step-like counter and a loss-like value (the generic
reader, analysis.logs.console). Columns get canonical names (step, loss, grad_norm, lr, seqlen; the rest
snake_cased). Any bad input raises LogError with a one-line message naming the file; NaN/inf losses are kept
(they are divergence events).

Text is tried in this order, most specific first: HF console dicts, JSON/JSONL, step-first console lines
(stdout), build-nanogpt log.txt, the generic console reader, then a table. A file none of them reads gets one
line naming the formats read and the two-column CSV that always works.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import LogError
from ..log_formats import CSV_HINT, formats_sentence
from .console import read_console
from .gradvar_run import _load_gradvar
from .hf_console import load_hf_console, looks_like_hf_console
from .json_logs import _load_json_text
from .nanogpt_logtxt import load_logtxt, looks_like_logtxt
from .stdout import load_stdout, looks_like_stdout
from .table import LogData, finalize, names_step_or_loss
from .tensorboard import _load_tensorboard
from .text_table import _load_csv_text
from .tfevents import _valid_tfrecord_header, find_event_files


def load_log(path, logging_steps: int | None = None) -> LogData:
    """Read any supported log; raises LogError (one line, naming the file) on bad input.

    `logging_steps`: the trainer's logging interval, for console logs whose lines carry no step (the HF
    Trainer's dicts); without it their entries are numbered 1, 2, ... and the notes say so.
    """
    if logging_steps is not None and (
        isinstance(logging_steps, bool) or int(logging_steps) != logging_steps or logging_steps < 1
    ):
        raise LogError(f"{path}: logging_steps must be a whole number >= 1, got {logging_steps!r}")
    try:
        return _load(Path(path), logging_steps)
    except LogError as exc:
        msg = str(exc)
        if "unknown format" in msg or "no loss column" in msg or "no step column" in msg:
            raise LogError(f"{msg}; {formats_sentence()}; {CSV_HINT}") from None
        raise


def _load(p: Path, logging_steps: int | None) -> LogData:
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
    if looks_like_hf_console(text):
        return load_hf_console(p, text, logging_steps)
    if p.suffix.lower() in (".json", ".jsonl", ".ndjson"):
        return _load_json_text(p, text)
    if head in "{[":
        try:
            return _load_json_text(p, text)
        except LogError:  # '[2018-11-26 14:47:26 INFO] Step 5350/50000; ...': console lines, not JSON
            log = read_console(p, text)
            if log is None:
                raise
            return log
    if looks_like_stdout(text):
        return load_stdout(p, text)
    if looks_like_logtxt(text):
        return load_logtxt(p, text)
    if not _looks_like_table(text):
        log = read_console(p, text)
        if log is not None:
            return log
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
        return _load(p / "trainer_state.json", None)
    # A HF output_dir: the newest checkpoint holds the whole log history.
    states = sorted(p.glob("checkpoint-*/trainer_state.json"), key=lambda q: _trailing_int(q.parent.name))
    if states:
        return _load(states[-1], None)
    events = find_event_files(p)
    if events:
        return _load_tensorboard(p, events)
    raise LogError(
        f"{p}: unknown format (folder has no gradvar records/, trainer_state.json or TensorBoard event files)"
    )


def _looks_like_table(text: str) -> bool:
    """A header naming a step or loss column, or a first line of numbers only: a table, not console lines."""
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    fields = [f.strip().strip('"') for f in re.split(r"[,\t;|]|\s+", first) if f.strip()]
    if fields and all(re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|nan|inf", f, re.I) for f in fields):
        return True
    return len(fields) > 1 and not re.search(r"\d", first) and names_step_or_loss(fields)


def _trailing_int(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else -1
