"""The study report: report.md and report.html from the runs a study left on disk.

Order: a slot for findings in plain words (`--lead FILE`), the design, the positive-control gate (first, when
the design cannot show the dilemma), the verdicts, each rule with its verbatim text, numbers and seed values,
then the figures and tables. A study with one seed per cell (`quick`) is a demonstration: no verdicts, one
figure, the table."""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.report.figure_style import save_png
from analysis.report.markdown import fmt, md_table
from analysis.report.md_html import render_file
from analysis.report.sections import reproduce, versions_table

from ..stats import rules as R
from ..stats.outcomes import TARGET_MARGIN
from ..stats.within_lr import MIN_RUNS, SIGNALS, within_lr_spearman
from . import figures as F
from .tables import StudyTables, load_study

LEAD_SLOT = (
    "_Findings in plain words go here: `gradvar study ... --lead FILE` puts FILE's text in this place. The "
    "sections below are generated from the runs._"
)
RUN_COLS = [
    "run",
    "arm",
    "batch",
    "lr",
    "seed",
    "steps_to_target",
    "tokens_to_target",
    "peak_ratio",
    "peak_step",
    "excess_steps",
    "blowup",
    "blowup_max",
    "blowup_first_step",
    "blowup_steps",
    "first_probe_loss",
    "final_probe_loss",
    "final_val_loss",
    "tokens",
]
LEFT_OUT = [
    "- **LR 1 and larger**: they measure how fast divergence grows, not the dilemma; the grid's top LR already "
    "blows up or spikes where the design needs it to.",
    "- **Causal 2 x 2 branches** (length x tokens per step from one checkpoint): branched mid-spike from one "
    "source with clipped outcomes they could not show a length effect at this scale; the equal-token length "
    "probe (rule S) asks the question directly, with the seed as the unit. A branch test would need branching "
    "after the warmup transient, pre-clip outcomes or clipping off, and at least 3 seeds.",
    "- **Spike interventions and variance-aware pacing**: the spike comes in the first 10-20 steps, where none of "
    "their rules can act (skip-step's z rule needs 8 earlier losses, rewind waits for the LR warmup to end and "
    "for a first checkpoint, the pacer learns its bound over the first 10 steps).",
]
PAPER = [
    "- GPT-2: stable training with 8x larger batch and 4x larger LR (abstract).",
    "- Up to 2.2x fewer tokens and 3.7x less wall time to the same or better zero-shot quality (abstract).",
    "- A strong correlation between training instability and extreme gradient variance; long sequences "
    "contribute to the extreme variance early in training (abstract).",
    "- Every other number attributed to the paper (its body, tables and figures) is not verified here.",
]


def _fig(fig, out_dir: Path, name: str, caption: str) -> list[str]:
    save_png(fig, out_dir / f"{name}.png")
    return [f"![{name}]({name}.png)", "", f"Figure: {caption}", ""]


def design_md(t: StudyTables) -> list[str]:
    o, ref = t.outcomes, t.ref
    cells = o.groupby(["batch", "arm"])["lr"].apply(lambda s: ", ".join(f"{x:g}" for x in sorted(set(s))))
    arms = "; ".join(f"batch {b} {a} at LR {lrs}" for (b, a), lrs in cells.items())
    seeds = sorted(o["seed"].unique())
    return [
        "## Design",
        "",
        f"{t.manifest.get('description', '')}. Arms: {arms}. Seeds {', '.join(map(str, seeds))}, paired (seed s "
        f"gives every arm the same initialisation and data order); {len(o)} finished runs of "
        f"{len(t.manifest['runs'])}. Tokens per run: {fmt(o['tokens'].min())}-{fmt(o['tokens'].max())}.",
        "",
        f"Outcomes are taken over optimizer (serial) steps. The target is the validation split's unigram "
        f"cross-entropy minus {TARGET_MARGIN:g} nats = **{ref['target']:.3f}**: a unigram model is the best a "
        f"model can do without context, so a probe loss this far below it is reached only by using context. "
        + (
            "The reference run reaches it, so steps to target are measurable."
            if ref["measurable"]
            else "**The reference run does not reach it: steps to target are not measurable in this study.**"
        ),
        "",
    ]


def reference_md(t: StudyTables) -> list[str]:
    o, ref = t.outcomes, t.ref
    ok = o[np.isfinite(o["final_val_loss"])]
    best = ok.loc[ok["final_val_loss"].idxmin()] if len(ok) else None
    note = [f"**Unigram and bigram are NaN: {ref['note']}.**", ""] if ref.get("note") else []
    blown = o[o["blowup"]]
    if len(blown):
        note += [
            f"Blow-ups (probe loss above ln V = {ref['ln_vocab']:.3f}): {len(blown)} of {len(o)} runs, first at "
            f"steps {fmt(blown['blowup_first_step'].min())}-{fmt(blown['blowup_first_step'].max())}, "
            f"{fmt(blown['blowup_steps'].min())}-{fmt(blown['blowup_steps'].max())} steps above it per run; the "
            f"first probe loss of the runs is {fmt(o['first_probe_loss'].min())}-{fmt(o['first_probe_loss'].max())} "
            "(a model at initialisation sits near ln V).",
            "",
        ]
    return [
        "## Where the runs end: the unigram and bigram lines",
        "",
        *note,
        f"On the validation split ({fmt(ref['val_tokens'])} tokens, vocabulary {ref['vocab']}; fitted on the "
        f"{fmt(ref['train_tokens'])} training tokens): unigram (add-one) cross-entropy **{ref['unigram']:.3f}**, "
        f"bigram (Witten-Bell interpolated with that unigram) **{ref['bigram']:.3f}**, ln V = "
        f"{ref['ln_vocab']:.3f}. Of {len(o)} runs, {int((ok['final_val_loss'] < ref['unigram']).sum())} end below "
        f"the unigram line, {int((ok['final_val_loss'] < ref['bigram']).sum())} below the bigram line"
        + (
            f"; the lowest final validation loss is {best['final_val_loss']:.3f} ({best['run']}), "
            f"{best['final_val_loss'] - ref['unigram']:+.3f} from the unigram and "
            f"{best['final_val_loss'] - ref['bigram']:+.3f} from the bigram."
            if best is not None
            else "."
        ),
        "",
    ]


def verdicts_md(v: dict[str, R.Verdict]) -> list[str]:
    out = []
    g = v["G"]
    if g.verdict != "passed":
        out += [
            f"**The design cannot show the dilemma at this scale**: the positive control does not resolve it "
            f"({g.why}). The verdicts on SLW below are read in that light.",
            "",
        ]
    else:
        out += [f"The positive control passes: {g.why}.", ""]
    table = pd.DataFrame([{"rule": k, "verdict": x.verdict, "why": x.why} for k, x in v.items() if k != "G"])
    return [*out, md_table(table), ""]


def claims_md(v: dict[str, R.Verdict]) -> list[str]:
    titles = {
        "G": "G: the positive control",
        "D1": "D1: the dilemma exists",
        "D2": "D2: a stabiliser buys serial-step efficiency",
        "D3": "D3: SLW against its token-matched control",
        "D4": "D4: SLW against the longer LR warmup",
        "S": "S: long sequences drive extreme gradient variance early",
    }
    out = ["## The rules, their numbers and verdicts", ""]
    out += [
        f"Margins: peak probe-loss ratio {R.RATIO_MARGIN:g}; steps to target {R.STEP_MARGIN:.0%}; a spike is a "
        f"peak ratio above {R.SPIKE:g}; length ratio {R.LENGTH_RATIO:g}. The seed is the unit: with n <= 3 seeds "
        "the values and their signs are printed, no bootstrap interval.",
        "",
    ]
    for key, x in v.items():
        out += [f"### {titles[key]}", "", f"> {R.RULES[key]}", "", f"**{x.verdict}**: {x.why}.", ""]
        out += [f"- {line}" for line in x.values] + ([""] if x.values else [])
    return out


def noise_md(t: StudyTables, out_dir: Path, lr: float) -> list[str]:
    cols = ["grad_norm", "grad_trace_sigma", "grad_true_sq", "grad_noise_scale"]
    have = [c for c in cols if c in t.steps and t.steps[c].notna().any()]
    if not have:
        return ["## Gradient noise", "", "Not recorded: every run has one micro-batch per step (K = 1).", ""]
    o = t.outcomes[(t.outcomes["batch"] == t.outcomes["batch"].max()) & (t.outcomes["role"] != "reference")]
    table = o.groupby(["arm", "lr"])[[f"early_max_{s}" for s in SIGNALS]].median().reset_index()
    return [
        "## Gradient noise by arm over the early steps",
        "",
        *_fig(
            F.fig_early(t.steps, t.window, lr, t.ref, cols=have),
            out_dir,
            "noise",
            F.cap_early(
                t.outcomes,
                t.window,
                lr,
                "Pre-clip gradient norm, tr(Σ) (per-sequence gradient variance), "
                "the |G|² estimate and B_simple = tr(Σ)/|G|² (symlog: one step's |G|² estimate can be negative)",
            ),
        ),
        f"Median over seeds of each run's largest value over steps {t.window[0]}-{t.window[1]} (NaN: not recorded "
        "at those steps):",
        "",
        md_table(table),
        "",
    ]


def correlation_md(t: StudyTables) -> list[str]:
    o = t.outcomes[(t.outcomes["batch"] == t.outcomes["batch"].max()) & (t.outcomes["role"] != "reference")]
    frames = [within_lr_spearman(o.rename(columns={f"early_max_{s}": s}), s) for s in SIGNALS]
    table = pd.concat(frames, ignore_index=True).sort_values(["lr", "signal"])
    return [
        "## Early signals and the spike, within each LR",
        "",
        f"Spearman ρ between a run's largest early value of each signal (steps {t.window[0]}-{t.window[1]}) and "
        f"its peak probe-loss ratio, over the runs at one LR (arms x seeds, large batch), never pooled across LRs "
        f"(every signal and the spike grow with the LR, so a pooled ρ measures the LR). Signals that clipping "
        f"does not pin: the pre-clip gradient norm and the noise columns. ρ is NaN below {MIN_RUNS} runs. "
        "Descriptive: no verdict rests on it.",
        "",
        md_table(table),
        "",
    ]


def length_md(t: StudyTables, out_dir: Path) -> list[str]:
    if not len(t.probes):
        return []
    units = R.length_units(t.probes, t.window[1])
    base = R.large_baseline_probes(t.probes)
    base = base[base["step"] <= t.window[1]]
    cols = ["grad_sq_max", "grad_sq_max_micro", "grad_trace_sigma_per_token"]
    table = base.groupby(["lr", "probe_seqlen"])[cols].median().reset_index()
    return [
        "## The equal-token length probe",
        "",
        *_fig(F.fig_length(base, t.window[1]), out_dir, "length_probe", F.cap_length(units, base, t.window[1])),
        f"Median over seeds and the probed steps up to {t.window[1]}:",
        "",
        md_table(table),
        "",
    ]


def figures_md(t: StudyTables, v: dict, out_dir: Path, lr: float) -> list[str]:
    o, ref = t.outcomes, t.ref
    out = ["## Figures", ""]
    out += _fig(F.fig_dilemma(t.steps, ref), out_dir, "dilemma", F.cap_dilemma(o, ref))
    out += _fig(F.fig_final_vs_lr(o, ref), out_dir, "final_loss_vs_lr", F.cap_final_vs_lr(o, ref))
    cells = {}
    best = v["D1"].extra.get("best")
    if best is not None:  # D2's contrasts: each arm above the baseline's best LR against the baseline there
        for arm in sorted(set(o["arm"]) - {R.BASELINE}, key=F.arm_key):
            c = R.paired_cells(o, arm, R.BASELINE, b_lr=best)
            cells[f"{arm} vs baseline@{best:g}"] = c[c["lr"] > best] if len(c) else c
    cells[f"{R.SLW} vs {R.MATCHED}"] = R.paired_cells(o, R.SLW, R.MATCHED)
    cells[f"{R.SLW} vs {R.control_arm(o)}"] = R.paired_cells(o, R.SLW, R.control_arm(o))
    rows = F.forest_rows({k: c for k, c in cells.items() if len(c)})
    if len(rows):
        out += _fig(F.fig_forest(rows), out_dir, "effects", F.cap_forest(rows))
    out += _fig(
        F.fig_early(t.steps, t.window, lr, ref),
        out_dir,
        "early_window",
        F.cap_early(o, t.window, lr, "Probe loss, probe-loss ratio and pre-clip gradient norm"),
    )
    return out


def run_table_md(t: StudyTables) -> list[str]:
    o = t.outcomes.sort_values(["batch", "arm", "lr", "seed"], key=lambda s: s.map(F.arm_key) if s.name == "arm" else s)
    return ["## Every run", "", md_table(o, RUN_COLS), ""]


def how_md(t: StudyTables, command_line: str) -> list[str]:
    cfg = t.runs[0].config
    return [
        "## How this was run",
        "",
        f"- Command: `{command_line or 'gradvar study --preset ' + t.manifest['study']}` (runs in "
        f"`{t.runs[0].path.parent}`; an interrupted study resumes where it stopped; a finished one only rewrites "
        "the report).",
        f"- Machine: {platform.machine()} {platform.system()}, device {(cfg.get('meta') or {}).get('device', '?')}.",
        "",
        "Each run's command:",
        "",
        reproduce(t.runs),
        "",
        md_table(versions_table(t.runs)),
        "",
    ]


def write_study_report(
    runs_root, out_dir, command_line: str = "", extra_lead: list[str] | None = None, ref=None, cache_dir=None
) -> Path:
    """report.md (and report.html beside it) in out_dir from the finished runs in runs_root. `ref`: the
    unigram/bigram numbers when already known (tests); computed from the runs' data (in `cache_dir`, default
    their config's) otherwise."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = load_study(runs_root, ref, cache_dir)
    batches = sorted(t.outcomes["batch"].unique()) if len(t.outcomes) else []
    what = (
        "the stability-efficiency dilemma on the batch axis"
        if len(batches) > 1
        else f"the baseline, SLW and their controls at batch {', '.join(f'{b:g}' for b in batches)}"
    )
    # a one-seed study has no findings to write: the slot would only invite them
    lead = ["## What we found", "", *(extra_lead or [LEAD_SLOT]), ""] if extra_lead or t.n_seeds > 1 else []
    md = [
        f"# gradvar study '{t.manifest['study']}': {what}",
        "",
        f"_Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `gradvar study` from {len(t.runs)} runs._",
        "",
        *lead,
        *design_md(t),
    ]
    lr = F.focus_lr(t.steps)
    if t.n_seeds < 2:
        md += [
            "## Verdicts",
            "",
            "**n = 1: no verdict.** One seed per arm: a demonstration of the measures, not evidence; the `cpu` "
            "study (two seeds, rules written before the runs) gives the verdicts.",
            "",
            *_fig(
                F.fig_early(t.steps, t.window, lr, t.ref, cols=["probe_loss_ratio"]),
                out_dir,
                "probe_ratio",
                F.cap_early(t.outcomes, t.window, lr, "Probe loss over its best so far against the optimizer step"),
            ),
            *reference_md(t),
            *run_table_md(t),
            *how_md(t, command_line),
        ]
    else:
        v = R.evaluate(t.outcomes, t.probes, t.window[1], t.ref["measurable"])
        md += [
            "## Verdicts",
            "",
            *verdicts_md(v),
            *reference_md(t),
            *claims_md(v),
            *figures_md(t, v, out_dir, lr),
            *noise_md(t, out_dir, lr),
            *correlation_md(t),
            *length_md(t, out_dir),
            *run_table_md(t),
            "## Left out, and why",
            "",
            *LEFT_OUT,
            "",
            "## The paper's claims (Li, Zhang & He 2022), as its abstract states them",
            "",
            *PAPER,
            "",
            *how_md(t, command_line),
        ]
    path = out_dir / "report.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    render_file(path)
    return path
