"""Markdown pieces of the reports: cell text, tables, figure blocks, file-safe names."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd


def fmt(v) -> str:
    """Compact cell text: 4 significant digits, '–' for missing."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "inf" if np.isinf(v) else f"{float(v):.4g}"
    return str(v)


def md_cell(v, fmt=fmt) -> str:
    return fmt(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(
    df: pd.DataFrame,
    cols=None,
    max_rows: int | None = None,
    *,
    cell=fmt,
    empty: str = "_(no data)_",
    more: str = "_({} more rows not shown)_",
) -> str:
    """A markdown table; `cell` formats each value (then escaped), `more` says how many rows were cut."""
    if df is None or not len(df):
        return empty
    cols = [c for c in (cols or df.columns) if c in df.columns]
    d = df[cols] if max_rows is None else df[cols].head(max_rows)
    lines = ["| " + " | ".join(md_cell(c, cell) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(md_cell(v, cell) for v in row) + " |" for row in d.itertuples(index=False)]
    if max_rows is not None and len(df) > max_rows:
        lines.append("\n" + more.format(len(df) - max_rows))
    return "\n".join(lines)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "run"


def figure_md(items) -> list[str]:
    # Captions carry run names: keep brackets, asterisks and backticks out of the markup (intra-word
    # underscores are literal in CommonMark, which markdown_to_html renders).
    clean = [(re.sub(r"[\[\]()*`]", " ", cap), name) for cap, name in items]
    return [f"![{cap}]({name})\n\nFigure: {cap}\n" for cap, name in clean]
