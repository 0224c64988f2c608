"""Text tables: CSV, TSV, ';' or '|' separated, or whitespace columns ('step loss' golden-loss files)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd

from ..errors import LogError
from .lightning import is_lightning, merge_step_rows
from .table import LogData, _short_list, finalize, names_step_or_loss
from .wandb_csv import from_wandb, is_wandb_export


def _load_csv_text(p: Path, text: str) -> LogData:
    lines = ["" if ln.lstrip().startswith("#") else ln for ln in text.splitlines()]
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise LogError(f"{p}: empty file (only comments)")
    header_line = lines[first]
    delim = max(",\t;|", key=header_line.count)
    if header_line.count(delim) == 0:
        delim = None  # whitespace-separated, e.g. a golden-loss file of 'step loss' lines
    fast = _fast_table(text, delim) if first == 0 and delim in (",", "\t") else None
    if fast is not None:  # a plain numeric CSV (the long logs): pandas' C parser, 20x faster than row by row
        return _finish(p, fast, [f"line {i + 2}" for i in range(len(fast))], [])
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
    elif not names_step_or_loss(header) or (
        delim is None and (any(len(f) != len(header) for _, f in body[:-1]) or not all(map(_is_name, header)))
    ):
        # A first line naming neither a step nor a loss (a table of other numbers, unreadable lines), or
        # space-separated lines of changing length (prose): not a table.
        raise LogError(
            f"{p}: unknown format (neither a table with step and loss columns nor console lines with a "
            "step-like counter and a loss-like value)"
        )
    rows, labels = [], []
    for no, fields in body:
        if len(fields) > len(header):
            if not names_step_or_loss(header):  # prose, markdown, ...: not a table at all
                raise LogError(f"{p}: unknown format (not a table with step and loss columns)")
            raise LogError(f"{p}: line {no} has {len(fields)} fields but the header has {len(header)}")
        rows.append(fields + [None] * (len(header) - len(fields)))  # a cut-off last line is padded
        labels.append(f"line {no}")
    if not rows:
        raise LogError(f"{p}: no data rows (only a header: {_short_list(header)})")
    raw = pd.DataFrame(rows, columns=range(len(header)), dtype=object)
    raw.columns = header
    return _finish(p, raw, labels, notes)


def _fast_table(text: str, delim: str):
    """The table via pandas when every cell is a number (or empty/NaN) and no row is ragged, else None."""
    try:
        df = pd.read_csv(io.StringIO(text), sep=delim, engine="c", skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError):
        return None
    header = [str(c) for c in df.columns]
    if is_lightning(header) or is_wandb_export(header):
        return None  # their sparse rows are merged by their own readers
    if len(df) < 1000 or any(h.startswith("Unnamed") for h in header) or len(set(header)) != len(header):
        return None  # small files keep the row-by-row reader and its exact messages
    if not all(pd.api.types.is_numeric_dtype(df[c]) for c in df.columns):
        return None
    return df


def _finish(p: Path, raw: pd.DataFrame, labels: list, notes: list) -> LogData:
    header = list(raw.columns)
    fmt = "csv"
    if is_wandb_export(header):
        (raw, more), fmt = from_wandb(raw), "wandb"
        notes.extend(more)
    elif is_lightning(header):
        (raw, labels), fmt = merge_step_rows(raw, labels), "lightning"
    log = finalize(raw, labels, str(p), fmt)
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


def _is_name(s: str) -> bool:
    """A column name of a space-separated table: no sentence punctuation at its end, not a bare number."""
    return bool(re.fullmatch(r"[\w/()%.-]*[\w)%]", s)) and not _is_number(s)


def _is_number(s) -> bool:
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False
