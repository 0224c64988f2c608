"""The report's first screen in words: what was run and what was found, with numbers; and the method notes."""

from __future__ import annotations

import pandas as pd

from ..records.correlate import MAX_BLOCKS, N_BOOT, N_BOOT_GROUPS
from ..records.metrics import DEFAULT_RULE, RECOVER_FACTOR
from ..records.seqlen import HEADLINE_STAT, state_seqlen_finding
from ..records.warning import ALARM_Q, HORIZON, WINDOW
from .markdown import fmt

METHOD_NOTES = [
    f"- Loss ratio r_t = L_t / min_(s<t) L_s. Ratio spike: r_t > {DEFAULT_RULE.ratio_threshold} and a rise of at "
    f"least {DEFAULT_RULE.min_rise} nats; z spike: L_t > mean + {DEFAULT_RULE.z_k}·std of the previous "
    f"{DEFAULT_RULE.z_window} losses; non-finite losses always count. Consecutive flagged steps are one event "
    "(gradvar.spikes, shared with the live monitor).",
    f"- Time to recover: steps from an event's start until the loss is below {RECOVER_FACTOR} × its pre-spike minimum.",
    "- Run class: diverged (non-finite, or ends above the ratio threshold), spiky (spikes, recovered), stable.",
    "- Correlations: Pearson and Spearman over finite pairs; p-values assume independent pairs (optimistic for "
    f"autocorrelated series); 95% intervals from a non-overlapping block bootstrap ({N_BOOT} resamples, "
    f"{N_BOOT_GROUPS} for per-group variants; block length max(n^(1/3), n/{MAX_BLOCKS}), blocks never straddle "
    "runs; Spearman resamples reuse the full-sample ranks). Lags −k..k: lag > 0 means the signal leads.",
    f"- Early warning: alarm when the signal exceeds the {ALARM_Q} quantile of its previous {WINDOW} values; "
    f"positive when a spike event starts within the next {HORIZON} steps; steps inside spikes excluded. AUROC "
    "of the score x / quantile − 1; precision per alarm step; recall per spike event; lead = event start − "
    "first alarm. `lrm` uses the median of the same previous window.",
    "- Sequence length: early = first 25% of a run's steps, late = last 25%. Under SLW, training-step lengths are "
    "confounded with time; the probe (same step, same sequences, truncated) is the controlled comparison.",
]


def _by_method(per_run: pd.DataFrame, col: str) -> str:
    parts = []
    for method, g in per_run.groupby("method", sort=True):
        v = pd.to_numeric(g[col], errors="coerce").dropna()
        if len(v):
            parts.append(f"{method} {v.median():.3g}" + (f" [{v.min():.3g}–{v.max():.3g}]" if len(v) > 1 else ""))
    return "; ".join(parts) or "–"


def summary_lines(runs, res) -> list[str]:
    """What was run and what was found, with numbers; negative results said plainly."""
    per_run = res["compare"]["per_run"]
    lines = [_what_was_run(runs, per_run)]
    src = "probe" if (per_run["probe_n_points"] > 0).all() else "training"
    col = "probe_spike_events" if src == "probe" else "spike_events"
    lines.append(
        f"**Spike events ({src} loss), median [range] over runs:** {_by_method(per_run, col)}. Max "
        f"{src} loss ratio: {_by_method(per_run, 'probe_max_loss_ratio' if src == 'probe' else 'max_loss_ratio')}."
    )
    lines.append(
        f"**Final validation loss:** {_by_method(per_run, 'final_val_loss')} (perplexity "
        f"{_by_method(per_run, 'final_val_ppl')}). Tokens to target {fmt(per_run['target_val_loss'].iloc[0])}: "
        f"{_by_method(per_run, 'tokens_to_target')}; wall time: {_by_method(per_run, 'time_to_target_s')} s."
    )
    if len(res["ranking"]):
        lines.append(_best_signal(res["ranking"]))
    hyp = res["seqlen_hyp"]
    lines.append(state_seqlen_finding(hyp[hyp["stat"] == HEADLINE_STAT]))
    return lines


def _what_was_run(runs, per_run: pd.DataFrame) -> str:
    methods = per_run["method"].value_counts().sort_index()
    uniq = lambda col: ", ".join(fmt(v) for v in sorted(per_run[col].dropna().unique()))  # noqa: E731
    machines = sorted({str(r.meta_config.get("machine")) for r in runs if r.meta_config.get("machine")})
    arms = ", ".join(f"{m} ×{n}" for m, n in methods.items())
    return (
        f"**What was run:** {len(runs)} run{'s' if len(runs) != 1 else ''} ({arms}); seeds "
        f"{uniq('seed') or '–'}; batch sizes {uniq('batch_size') or '–'}; peak LRs {uniq('lr') or '–'}; up to "
        f"{fmt(per_run['last_step'].max())} steps and {fmt(per_run['tokens'].max())} tokens"
        + (f"; machine: {', '.join(machines)}" if machines else "")
        + "."
    )


def _best_signal(rank: pd.DataFrame) -> str:
    best = [
        (what, r.iloc[0])
        for what, r in (("whole model", rank[rank["group"] == "all"]), ("per group", rank[rank["group"] != "all"]))
        if len(r)
    ]
    return (
        "**Best signal for the loss ratio** (pooled Spearman ρ, 95% CI): "
        + "; ".join(
            f"{what}: {t['signal']} ({t['transform']}) ρ = {t['spearman_r']:+.2f} [{t['spearman_lo']:+.2f}, "
            f"{t['spearman_hi']:+.2f}], best lag {fmt(t.get('best_lag'))}, "
            f"early-warning AUROC {fmt(t.get('auroc'))}"
            for what, t in best
        )
        + "."
    )
