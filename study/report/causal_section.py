"""The causal 2 x 2 section of the study report and its claim (C6): does sequence length, at equal tokens per
step, raise the extreme Adam variance early in training? Reads study.json "branches" and the arm runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from analysis.report.markdown import fmt, md_table

from ..stats.causal import OUTCOMES, arm_rows, block_effects, effect_table, probe_by_length

CLAIM = "C6 long sequences drive extreme variance early"
RULE = (
    "Long sequences drive extreme variance early: at equal tokens per step, the length effect on log max "
    "bias-corrected Adam variance (full minus short, paired by block) has a 95% bootstrap interval over blocks "
    "above 0 -> supported; below 0 -> refuted; containing 0, or fewer than 4 blocks -> inconclusive."
)
MIN_BLOCKS = 4


def verdict(row) -> tuple[str, str]:
    """(verdict, why) of the rule from the length effect on log_vhat_max."""
    if row is None or row["n_blocks"] < MIN_BLOCKS or not math.isfinite(row["low"]):
        n = 0 if row is None else int(row["n_blocks"])
        return "inconclusive", f"{n} blocks, fewer than {MIN_BLOCKS}"
    if row["low"] > 0:
        return "supported", "the interval lies above 0"
    if row["high"] < 0:
        return "refuted", "the interval lies below 0: full length lowers it"
    return "inconclusive", "the interval contains 0"


def causal_section(runs_root, out_dir) -> tuple[list[str], dict | None]:
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    records = json.loads((runs_root / "study.json").read_text()).get("branches") or []
    arms = arm_rows(runs_root, records)
    if arms.empty:
        return [], None
    effects = block_effects(arms)
    table = effect_table(effects)
    length = table[(table["outcome"] == "log_vhat_max") & (table["effect"] == "length")]
    row = length.iloc[0] if len(length) else None
    v, why = verdict(row)
    measured = (
        "no complete block"
        if row is None
        else (
            f"length effect {fmt(row['mean'])} [{fmt(row['low'])}, {fmt(row['high'])}] "
            f"over {int(row['n_blocks'])} blocks"
        )
    )
    claim = {"claim": CLAIM, "source": "paper (abstract)", "rule": RULE, "measured": measured, "verdict": v, "why": why}
    steps = sorted({r["step"] for r in records})
    sources = sorted({r["source"] for r in records})
    short = records[0].get("short", "short")
    lines = ["## The causal test: length at equal tokens per step", ""]
    lines += [
        f"From {len(sources)} baseline run(s) ({', '.join(sources)}) at steps {', '.join(map(str, steps))}, four "
        f"continuations each: length {{{short}, full}} x tokens per step {{low, high}}, every arm from the same "
        "model, optimizer and RNG state, at the source's LR. A block is one source run at one step. Rule: " + RULE,
        "",
    ]
    figure = _figure(arms, out_dir, len(effects.groupby(["seed", "step"])))
    if figure:
        lines += [f"![causal_2x2.png]({figure[0]})", "", figure[1], ""]
    t = table.assign(outcome=table["outcome"].map(OUTCOMES))
    lines += ["### Paired effects (mean over blocks, 95% bootstrap interval over blocks)", "", md_table(t), ""]
    lines += ["Blocks of one source run share a model: the interval is over blocks, not over independent seeds.", ""]
    lines += _probe_lines(runs_root, sources, steps)
    return lines, claim


def _probe_lines(runs_root, sources, steps) -> list[str]:
    probes = probe_by_length(runs_root, sources, steps)
    if probes.empty:
        return []
    return [
        f"### The sequence-length probe at the branch steps (equal tokens per length; medians over runs and steps, "
        f"intervals over runs, n = {int(probes['n_runs'].max())})",
        "",
        md_table(probes),
        "",
    ]


def _figure(arms, out_dir: Path, n_blocks: int):
    from .causal_figures import fig_causal

    fig, caption = fig_causal(arms, n_blocks)
    if fig is None:
        return None
    from analysis.report.figure_style import save_png

    save_png(fig, out_dir / "causal_2x2.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "causal_2x2.png", caption
