"""The paper's four claims (Li, Zhang & He 2022, abstract) beside a study's numbers, each with a verdict.

Only the study's report shows this table: a report of any other runs says what was found, not how it compares
with one paper.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..records.seqlen import HEADLINE_STAT

PAPER = {
    "stability": "SLW trains stably with 8x larger batch and 4x larger LR where the baseline spikes (GPT-2 117M/1.5B)",
    "correlation": "Instability correlates strongly with extreme gradient variance (Adam variance state)",
    "seqlen": "Long sequences contribute the extreme variance, especially early in training",
    "efficiency": "Same or better quality with up to 2.2x fewer tokens and 3.7x less wall time",
}


def _spread(v: pd.Series) -> str:
    v = pd.to_numeric(v, errors="coerce").dropna()
    return "–" if not len(v) else f"{v.median():.3g} [{v.min():.3g}, {v.max():.3g}]"


def _stability_claim(per_run: pd.DataFrame, ref: str, treat: str) -> tuple[str, str]:
    b, s = per_run[per_run["method"] == ref], per_run[per_run["method"] == treat]
    if not len(b) or not len(s):
        return "no " + (ref if not len(b) else treat) + " runs", "not testable here"
    probe = (b["probe_n_points"] > 0).all() and (s["probe_n_points"] > 0).all()
    col = "probe_spike_events" if probe else "spike_events"
    rcol = "probe_max_loss_ratio" if probe else "max_loss_ratio"
    mb, ms = b[col].median(), s[col].median()
    here = (
        f"{'probe' if probe else 'training'}-loss spike events {treat} {_spread(s[col])} vs {ref} "
        f"{_spread(b[col])}; max loss ratio {treat} {_spread(s[rcol])} vs {ref} {_spread(b[rcol])} "
        f"({len(s)} vs {len(b)} runs)"
    )
    if ms < mb:
        verdict = "supported" if s[col].max() < b[col].min() else "weakly supported (seed ranges overlap)"
    elif ms == mb:
        verdict = "not supported (no difference)"
    else:
        verdict = "contradicted (more spikes with SLW)"
    return here, verdict


def _correlation_claim(rank: pd.DataFrame) -> tuple[str, str]:
    rows = rank[rank["signal"] == "adam_v_max"] if len(rank) else rank
    if not len(rows):
        return "adam_v_max not recorded", "not testable here"
    parts = [
        f"{r.transform} ρ = {r.spearman_r:+.2f} [{r.spearman_lo:+.2f}, {r.spearman_hi:+.2f}]" for r in rows.itertuples()
    ]
    best = rank.iloc[0]
    here = (
        f"adam_v_max vs loss ratio (pooled Spearman, 95% block-bootstrap CI): {'; '.join(parts)}. Best signal: "
        f"{best['signal']} ({best['transform']}) ρ = {best['spearman_r']:+.2f}"
    )
    pos = rows[(rows["spearman_r"] > 0) & (rows["spearman_lo"] > 0)]
    if len(pos):
        verdict = "supported" if pos["spearman_r"].max() >= 0.5 else "weakly supported (ρ < 0.5)"
    elif ((rows["spearman_r"] < 0) & (rows["spearman_hi"] < 0)).all():
        verdict = "contradicted (negative correlation)"
    else:
        verdict = "not supported (interval includes 0)"
    return here, verdict


def _seqlen_claim(hyp: pd.DataFrame) -> tuple[str, str]:
    h = hyp[(hyp["stat"] == HEADLINE_STAT) & (hyp["window"] == "early")] if len(hyp) else hyp
    if not len(h) or not np.isfinite(h["spearman_rho"]).any():
        return "no probe data", "not testable here"
    r = h[h["run"] == "pooled"].iloc[0] if (h["run"] == "pooled").any() else h.iloc[0]
    here = (
        f"early window, {HEADLINE_STAT} vs probe length: Spearman ρ = {r['spearman_rho']:+.2f} "
        f"(p = {r['p_value']:.2g}), longest/shortest = {r['fold_change']:.2f}x"
    )
    verdict = r["verdict"]
    return here, (
        "supported"
        if "supported" in verdict
        else "contradicted"
        if "contradicted" in verdict
        else f"not supported ({verdict})"
    )


def _efficiency_claim(per_run: pd.DataFrame, ratios: pd.DataFrame, ref: str, treat: str) -> tuple[str, str]:
    if treat not in set(ratios["method"]) or ref not in set(ratios["method"]):
        return f"needs both {ref} and {treat} runs", "not testable here"
    r = ratios.set_index("method").loc[treat]
    b, s = (per_run[per_run["method"] == m]["final_val_loss"].median() for m in (ref, treat))
    tok, tim = r["tokens_to_target_ratio"], r["time_to_target_s_ratio"]
    here = (
        f"to the target val loss {treat} used {tok:.2f}x the tokens and {tim:.2f}x the wall time of {ref}; "
        f"final val loss {treat} {s:.3f} vs {ref} {b:.3f}"
    )
    if not np.isfinite(tok) or not np.isfinite(tim):
        return here, "not testable here (target not reached)"
    if tok < 1 and tim < 1 and s <= b + 0.02:
        return here, "supported" if tok <= 1 / 1.2 else "weakly supported (< 1.2x saving)"
    return here, "not supported"


def claims_table(
    cmp: dict, rank: pd.DataFrame, hyp: pd.DataFrame, reference: str = "baseline", treatment: str = "slw"
) -> pd.DataFrame:
    """Claim | paper | here | verdict, for the four claims of Li, Zhang & He (2022)."""
    per_run = cmp["per_run"]
    rows = [
        ("stability", _stability_claim(per_run, reference, treatment)),
        ("correlation", _correlation_claim(rank)),
        ("seqlen", _seqlen_claim(hyp)),
        ("efficiency", _efficiency_claim(per_run, cmp["target"], reference, treatment)),
    ]
    return pd.DataFrame([{"claim": k, "paper (abstract)": PAPER[k], "here": h, "verdict": v} for k, (h, v) in rows])


def claims_lines(claims: pd.DataFrame | None) -> list[str]:
    """The summary's lines on the claims: those not reproduced first, said plainly; none without a table."""
    if claims is None or not len(claims):
        return []
    lines = []
    neg = claims[claims["verdict"].str.startswith(("not supported", "contradicted"))]
    if len(neg):
        lines.append(
            "**Not reproduced here:** " + "; ".join(f"{r.claim} — {r.verdict}" for r in neg.itertuples()) + "."
        )
    ok = claims[claims["verdict"].str.contains("supported") & ~claims["verdict"].str.startswith("not")]
    if len(ok):
        lines.append("**Reproduced here:** " + "; ".join(f"{r.claim} — {r.verdict}" for r in ok.itertuples()) + ".")
    return lines
