"""The report's "What moved first" section: per run, each loss event's attribution in a few lines
(analysis.diagnosis.attribution), and one figure per major event."""

from __future__ import annotations

import numpy as np

from gradvar.spikes import SpikeRule

from ..diagnosis.attribution import attribution_lines
from ..diagnosis.attribution_figure import figure_of, major_events
from ..diagnosis.events import find_spikes
from ..records.attribution import attribute_run
from .figure_style import save_png
from .markdown import slug

MAX_RUNS = 12
MAX_FIGURES = 6
"""Figures in the section over all runs (a study report holds dozens of runs; their lines stay, all of them)."""
SUSTAIN = 7  # diagnose's sustained-rise window (analysis.diagnosis.SUSTAIN)


def attribution_section(runs, out_dir) -> str:
    """Markdown for the section (figures written to out_dir); '' when no run has a loss event."""
    parts, n_figs = [], 0
    for run in runs[:MAX_RUNS]:
        steps = run.steps
        if not len(steps) or "loss" not in steps:
            continue
        steps = steps.sort_values("step", kind="stable").drop_duplicates("step", keep="last").reset_index(drop=True)
        with np.errstate(all="ignore"):
            _, spikes, _ = find_spikes(steps, SpikeRule(), SUSTAIN)
            atts, notes = attribute_run(steps, spikes, run.layers, run.probes)
        if not atts:
            continue
        parts += [f"### {run.name}", ""]
        parts += [f"- {' '.join(attribution_lines(a))}" for a in atts]
        parts += [f"- {n}" for n in notes]
        parts.append("")
        for att in major_events(spikes, atts)[: max(0, MAX_FIGURES - n_figs)]:
            n_figs += 1
            name = f"first_moved_{slug(run.name)}_{att.event}.png"
            save_png(figure_of(att), out_dir / name)
            parts += [f"![What moved first: {slug(run.name)}, event {att.event}]({name})", ""]
    if not parts:
        return ""
    head = [
        "## What moved first",
        "",
        "For each loss event, every recorded series judged against its own recent level by one rule "
        "(docs/diagnose.md): what left it before the loss did, where it started, and when the batch was the cause.",
        "",
    ]
    return "\n".join(head + parts)
