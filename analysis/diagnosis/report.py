"""Write a diagnosis as report.md (+ PNG figures, tidy CSVs) and a self-contained report.html.

Figures are built on matplotlib.figure.Figure directly (rendered by Agg on save), so no pyplot state or GUI
backend is touched; colours come from seaborn's colour-blind-safe palette. Every name that comes from a path
or a log is escaped in the HTML.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..logs import LogData
from ..report.markdown import md_table
from . import SNIPPET, Diagnosis
from .advice import HF_SNIPPET
from .attribution import attribution_lines
from .attribution_figure import figure_of, major_events
from .overview import fig_overview
from .palette import KIND_COLOURS, PALETTE

NAN_COLOUR = "black"
MAX_SIGNAL_PANELS = 6
MAX_TABLE_ROWS = 40


def _log_scale(v: np.ndarray, near_zero: bool = True) -> bool:
    """Log y when the values are positive and span a wide range (or, for a loss, sit near zero)."""
    v = v[np.isfinite(v)]
    return bool(len(v) and (v > 0).all() and (v.max() / v.min() > 30 or near_zero and np.median(v) < 0.1))


def _shade_events(ax, spikes: pd.DataFrame, half: float, label: bool) -> None:
    seen = set()
    for _, ev in spikes.iterrows():
        kind = ev["kind"]
        lab = kind.replace("_", " ") if label and kind not in seen else None
        seen.add(kind)
        ax.axvspan(
            ev["start_step"] - half,
            ev["end_step"] + half,
            color=KIND_COLOURS.get(kind, PALETTE[7]),
            alpha=0.25,
            lw=0,
            label=lab,
        )


def fig_loss(
    entries: pd.DataFrame,
    spikes: pd.DataFrame,
    eval_df=None,
    title: str = "",
    ratio_threshold: float = 1.2,
    interval: float = 1.0,
) -> Figure:
    """Loss (with its running minimum and smoothed trend) over steps, events shaded; below it the loss ratio."""
    fig = Figure(figsize=(9, 6), layout="constrained")
    ax, axr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.4])
    step, loss = entries["step"].to_numpy(), entries["loss"].to_numpy(np.float64)
    ok = np.isfinite(loss)
    many = len(step) > 400
    ax.plot(step[ok], loss[ok], color=PALETTE[0], lw=1, marker=None if many else ".", ms=3, label="loss")
    ax.step(step, entries["ref_loss"], where="post", color=PALETTE[7], lw=0.8, ls="--", label="running minimum")
    if np.isfinite(entries["trend"]).any():
        ax.plot(step, entries["trend"], color=PALETTE[2], lw=1.2, label="rolling median")
    if eval_df is not None and "eval_loss" in eval_df and np.isfinite(eval_df["eval_loss"]).any():
        ax.plot(eval_df["step"], eval_df["eval_loss"], color=PALETTE[5], marker="s", ms=4, lw=1, label="eval_loss")
    _shade_events(ax, spikes, interval / 2, label=True)
    if _log_scale(loss):
        ax.set_yscale("log")
    if (~ok).any():
        top = ax.get_ylim()[1]
        ax.plot(step[~ok], np.full((~ok).sum(), top), "x", color=NAN_COLOUR, ms=7, clip_on=False, label="NaN/inf loss")
    finite = spikes[spikes["kind"] != "nonfinite"]
    if len(finite):
        ax.plot(finite["peak_step"], finite["peak_loss"], "v", color=PALETTE[3], ms=6, ls="none", label="event peak")
    ax.set_ylabel("training loss (nats)")
    ax.set_title(title, parse_math=False, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ratio = entries["loss_ratio"].to_numpy(np.float64)
    axr.plot(step[np.isfinite(ratio)], ratio[np.isfinite(ratio)], color=PALETTE[0], lw=0.8)
    axr.axhline(ratio_threshold, color=PALETTE[3], lw=0.8, ls=":", label=f"threshold {ratio_threshold:g}")
    _shade_events(axr, spikes, interval / 2, label=False)
    if _log_scale(ratio):
        axr.set_yscale("log")
    axr.set_ylabel("loss / earlier min")
    axr.set_xlabel("step")
    axr.legend(fontsize=8, loc="upper right")
    return fig


def fig_signals(df: pd.DataFrame, spikes: pd.DataFrame, signals: pd.DataFrame, interval: float = 1.0):
    """Each ranked signal over steps (best first), events shaded; None when the log has no other signal."""
    names = list(signals["signal"])[:MAX_SIGNAL_PANELS] if len(signals) else []
    names = [n for n in names if n in df]
    if not names:
        return None
    fig = Figure(figsize=(9, 1.9 * len(names) + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0])
    step = df["step"].to_numpy()
    for ax, (i, name) in zip(axes, enumerate(names)):
        v = df[name].to_numpy(np.float64)
        ok = np.isfinite(v)
        ax.plot(step[ok], v[ok], color=PALETTE[i % len(PALETTE)], lw=1, marker=None if ok.sum() > 400 else ".", ms=3)
        _shade_events(ax, spikes, interval / 2, label=i == 0)
        if _log_scale(v, near_zero=False):
            ax.set_yscale("log")
        if (~ok).any():
            low = ax.get_ylim()[0]
            ax.plot(step[~ok], np.full((~ok).sum(), low), "x", color=NAN_COLOUR, ms=6, clip_on=False, label="NaN/inf")
        ax.set_ylabel(name, fontsize=8)
        if i == 0 or (~ok).any():
            handles = ax.get_legend_handles_labels()[0]
            if handles:
                ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("step")
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _cell(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


def _tables(diag: Diagnosis) -> list:
    """(title, DataFrame) pairs shown in both reports."""
    sp = diag.spikes.rename(columns={"n_entries": "entries", "grad_norm_rel": "grad_norm_x"})
    sp = sp.drop(columns=["position", "lr_frac", "at_end"], errors="ignore")
    sig = diag.signals.drop(columns=["n_obs"], errors="ignore")
    return [("Spike events", sp), (f"Signals before the events (horizon {diag.horizon} entries)", sig)]


def _md_table(df: pd.DataFrame) -> str:
    return (
        md_table(df, max_rows=MAX_TABLE_ROWS, cell=_cell, empty="_none_", more="... {} more rows in the CSV file")
        + "\n"
    )


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r) + "</tr>"
        for r in df.head(MAX_TABLE_ROWS).itertuples(index=False)
    )
    more = f"<p>... {len(df) - MAX_TABLE_ROWS} more rows in the CSV file</p>" if len(df) > MAX_TABLE_ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _markdown(diag: Diagnosis, log: LogData, figs: dict) -> str:
    name = Path(log.source).name
    out = [
        f"# Diagnosis: {name}\n",
        f"Source: `{log.source}` ({log.fmt})\n",
        "![overview](overview.png)\n",
        "## Summary\n",
        diag.summary + "\n",
    ]
    for title, table in _tables(diag):
        out += [f"## {title}\n", _md_table(table)]
    if diag.attribution:
        out += ["## What moved first\n"] + [f"- {' '.join(attribution_lines(a))}" for a in diag.attribution] + [""]
    out += ["## Advice\n"] + [f"- {a}" for a in diag.advice] + [""]
    if diag.record_more:
        out += [
            "## Record next time\n",
            "```python",
            "import gradvar",
            SNIPPET,
            "```\n",
            "Hugging Face Trainer:\n",
            "```python",
            HF_SNIPPET,
            "```\n",
        ]
    if diag.notes:
        out += ["## Notes\n"] + [f"- {n}" for n in diag.notes] + [""]
    out += ["## Figures\n"] + [f"![{k}]({k})\n" for k in figs if k != "overview.png"]
    return "\n".join(out)


def _img(name: str, png: bytes) -> str:
    return f'<p><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></p>'


def _html(diag: Diagnosis, log: LogData, pngs: dict) -> str:
    e = html.escape
    name = Path(log.source).name
    parts = [
        f"<h1>Diagnosis: {e(name)}</h1>",
        f"<p>Source: <code>{e(log.source)}</code> ({e(log.fmt)})</p>",
        _img("overview.png", pngs.pop("overview.png")),
        "<h2>Summary</h2>",
        f"<p>{e(diag.summary)}</p>",
    ]
    for title, table in _tables(diag):
        parts += [f"<h2>{e(title)}</h2>", _html_table(table)]
    if diag.attribution:
        parts += ["<h2>What moved first</h2><ul>"]
        parts += [f"<li>{e(' '.join(attribution_lines(a)))}</li>" for a in diag.attribution] + ["</ul>"]
    parts += ["<h2>Advice</h2><ul>"] + [f"<li>{e(a)}</li>" for a in diag.advice] + ["</ul>"]
    if diag.record_more:
        parts += [
            "<h2>Record next time</h2>",
            f"<pre>import gradvar\n{e(SNIPPET)}</pre>",
            "<p>Hugging Face Trainer:</p>",
            f"<pre>{e(HF_SNIPPET)}</pre>",
        ]
    if diag.notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{e(n)}</li>" for n in diag.notes] + ["</ul>"]
    parts += ["<h2>Figures</h2>"] + [_img(k, v) for k, v in pngs.items()]
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.45}"
        "table{border-collapse:collapse;font-size:85%}td,th{border:1px solid #ccc;padding:2px 6px}"
        "pre{background:#f4f4f4;padding:8px}img{max-width:100%}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Diagnosis: {e(name)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_diagnosis_report(diagnosis: Diagnosis, logdata: LogData, out_dir) -> Path:
    """Write report.md, report.html, overview.png, loss.png, signals.png (when there are signals), tables as CSV."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{Path(logdata.source).name}: {diagnosis.run_class}"
    figs = {
        "overview.png": fig_overview(logdata, diagnosis),
        "loss.png": fig_loss(
            diagnosis.entries, diagnosis.spikes, logdata.eval_df, title, _threshold(diagnosis), diagnosis.interval
        ),
    }
    sig = fig_signals(logdata.df, diagnosis.spikes, diagnosis.signals, diagnosis.interval)
    if sig is not None:
        figs["signals.png"] = sig
    for att in major_events(diagnosis.spikes, diagnosis.attribution):
        figs[f"first_moved_{att.event}.png"] = figure_of(att)
    pngs = {k: _png(f) for k, f in figs.items()}
    for k, data in pngs.items():
        (out / k).write_bytes(data)
    diagnosis.spikes.to_csv(out / "spikes.csv", index=False)
    diagnosis.signals.to_csv(out / "signals.csv", index=False)
    (out / "report.html").write_text(_html(diagnosis, logdata, dict(pngs)), encoding="utf-8")
    path = out / "report.md"
    path.write_text(_markdown(diagnosis, logdata, pngs), encoding="utf-8")
    return path


def _threshold(diag: Diagnosis) -> float:
    return float(diag.facts.get("ratio_threshold", 1.2))
