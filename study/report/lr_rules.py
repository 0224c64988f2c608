"""The LR-grid study's decision rules, as code and as the text the report prints before any result.

Each claim's verdict is computed from the grid's tables (analysis.records.lr_grid) by the rule written
beside it in RULES; the measured string only reports the numbers the rule looked at.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from analysis.report.markdown import fmt

from ..stats.bootstrap import run_bootstrap
from ..stats.lr_grid import STATES, UNSTABLE, WITHIN, paired, unstable_lrs

SUPPORTED, REFUTED, INCONCLUSIVE, NOT_TESTED = "supported", "refuted", "inconclusive", "not tested"

DEFINITIONS = (
    f"A run is *unstable* when its peak probe loss ratio exceeds {UNSTABLE:g}. U = the peak LRs at which the "
    "baseline is unstable in every seed. m = the noise margin: max(0.02, 2 x the median over (arm, LR) cells "
    "of the seed-to-seed range of final validation loss; 0.1 nats when the grid has one seed). Excess area = "
    "the area of max(0, probe loss ratio - 1) "
    f"over tokens (M). LR sensitivity = the mean over LRs of an arm's final loss minus its best. "
    f"Seed pairs share initialisation and data order. Non-finite final losses count as ln(vocab)."
)
RULES = {
    "C1": "U empty -> inconclusive (no unstable regime in the grid); supported if at every LR in U SLW's excess "
    "area < baseline's in every seed pair and SLW's final loss is not worse by > m in any; refuted if at every "
    "LR in U SLW's excess area >= baseline's in every seed pair; else inconclusive.",
    "C2": f"supported if in every seed SLW's largest LR within {WITHIN:g} nats of its best >= baseline's and SLW's "
    "LR sensitivity < baseline's by > m; refuted if in every seed SLW's LR sensitivity >= baseline's; else "
    "inconclusive.",
    "C3": "compare SLW with batch-warmup on excess area at U and on LR sensitivity: supported (length matters) "
    "if SLW is better than the control in every seed pair on both; refuted (tokens per step explain it) if the "
    "control is as good or better in every seed pair on both; else inconclusive.",
    "C4": "the rule of C3 with warmup20 (a 20-step LR warmup) in place of batch-warmup.",
    "C5": "over distinct runs (all arms, LRs, seeds), Spearman rho between the early max of adam_vhat_max and "
    "the peak probe loss ratio, 95% bootstrap interval over runs: supported if rho >= 0.5 and the interval's "
    "low end > 0; refuted if the interval's high end < 0.3; else inconclusive. adam_vhat_l1 and the raw "
    "states are reported beside; the verdict uses adam_vhat_max.",
    "C7": "per seed, each arm at its best LR: supported if SLW's best final loss < baseline's best by > m in "
    "every seed; refuted if worse by > m in every seed; else inconclusive. Wall time is reported only when "
    "the difference exceeds the seed-to-seed spread of the same arm's wall time.",
}
CLAIMS = {
    "C1": ("stability: SLW trains stably at larger LR", "paper (abstract)"),
    "C2": ("the dilemma: SLW lets larger LRs train well", "paper"),
    "C3": ("attribution: SLW's benefit is its sequence length, not its fewer tokens per step", "not in the paper"),
    "C4": ("SLW beats a longer LR warmup (20 steps)", "control, not in the paper"),
    "C5": ("instability correlates strongly with extreme gradient variance", "paper (abstract)"),
    "C7": ("efficiency: same or better loss (at equal tokens here)", "paper (abstract)"),
}


@dataclass
class Claim:
    claim: str
    source: str
    rule: str
    measured: str
    verdict: str
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


def _claim(key: str, measured: str, verdict: str, why: str) -> Claim:
    text, source = CLAIMS[key]
    return Claim(f"{key} {text}", source, RULES[key], measured, verdict, why)


def _pairs_text(d: pd.DataFrame, col: str) -> str:
    return ", ".join(f"LR {lr:g} s{s}: {fmt(v)}" for lr, s, v in zip(d["lr"], d["seed"], d[col]))


def _at_u(rows: pd.DataFrame, a: str, b: str, u: list[float]) -> pd.DataFrame:
    d = paired(rows, a, b)
    return d[d["lr"].isin(u)]


def c1_stability(rows: pd.DataFrame, m: float) -> Claim:
    u = unstable_lrs(rows)
    if not u:
        return _claim(
            "C1", "U = {} (baseline never unstable in every seed)", INCONCLUSIVE, "no unstable regime in the grid"
        )
    d = _at_u(rows, "slw", "baseline", u)
    measured = f"U = {{{', '.join(f'{x:g}' for x in u)}}}; SLW - baseline excess area: " + _pairs_text(
        d, "d_excess_area"
    )
    measured += "; final loss: " + _pairs_text(d, "d_final_val_loss") + f"; m = {fmt(m)}"
    if not len(d) or set(d["lr"]) != set(u):
        return _claim("C1", measured, NOT_TESTED, "SLW lacks a seed pair at some LR in U")
    area, loss = d["d_excess_area"].to_numpy(float), d["d_final_val_loss"].to_numpy(float)
    if np.isnan(area).any() or np.isnan(loss).any() or math.isnan(m):
        return _claim("C1", measured, INCONCLUSIVE, "a difference or m is NaN")
    if (area < 0).all() and (loss <= m).all():
        return _claim("C1", measured, SUPPORTED, "less excess area in every pair, final loss within m")
    if (area >= 0).all():
        return _claim("C1", measured, REFUTED, "SLW's excess area >= baseline's in every pair at U")
    if (area < 0).all():
        worse = d[loss > m]
        where = ", ".join(f"LR {lr:g} s{sd}" for lr, sd in zip(worse["lr"], worse["seed"]))
        return _claim(
            "C1", measured, INCONCLUSIVE, f"less excess area in every pair, but final loss worse by > m at {where}"
        )
    return _claim("C1", measured, INCONCLUSIVE, "the pairs disagree on excess area")


def _per_seed(outcomes: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    left = outcomes[outcomes["arm"] == a].set_index("seed")
    right = outcomes[outcomes["arm"] == b].set_index("seed")
    return left.join(right, lsuffix="_a", rsuffix="_b", how="inner").sort_index()


def c2_dilemma(outcomes: pd.DataFrame, m: float) -> Claim:
    s = _per_seed(outcomes, "slw", "baseline")
    measured = "; ".join(
        f"s{seed}: largest LR within {WITHIN:g} SLW {r.largest_lr_within_a:g} vs baseline {r.largest_lr_within_b:g}, "
        f"sensitivity SLW {fmt(r.sensitivity_a)} vs baseline {fmt(r.sensitivity_b)}"
        for seed, r in s.iterrows()
    )
    measured += f"; m = {fmt(m)}"
    if not len(s):
        return _claim("C2", measured, NOT_TESTED, "no seed has both SLW and the baseline")
    sa, sb = s["sensitivity_a"].to_numpy(float), s["sensitivity_b"].to_numpy(float)
    if np.isnan(sa).any() or np.isnan(sb).any() or math.isnan(m):
        return _claim("C2", measured, INCONCLUSIVE, "a sensitivity or m is NaN")
    wider = (s["largest_lr_within_a"] >= s["largest_lr_within_b"]).all()
    if wider and (sa < sb - m).all():
        return _claim("C2", measured, SUPPORTED, "wider LR range and lower sensitivity by > m in every seed")
    if (sa >= sb).all():
        return _claim("C2", measured, REFUTED, "SLW's sensitivity >= baseline's in every seed")
    return _claim("C2", measured, INCONCLUSIVE, "the seeds disagree, or the gain is within m")


def c3_attribution(rows: pd.DataFrame, outcomes: pd.DataFrame, control: str = "batch-warmup", key: str = "C3") -> Claim:
    """SLW against a control arm on excess area at U and on LR sensitivity (C3; C4 with warmup20)."""
    if control not in set(rows["arm"]) or "slw" not in set(rows["arm"]):
        return _claim(key, f"no {control} or SLW runs in the grid", NOT_TESTED, f"the grid has no {control} arm")
    u = unstable_lrs(rows)
    d, s = _at_u(rows, "slw", control, u), _per_seed(outcomes, "slw", control)
    measured = (
        f"U = {{{', '.join(f'{x:g}' for x in u)}}}; SLW - {control} excess area: {_pairs_text(d, 'd_excess_area')}"
    )
    measured += "; sensitivity " + ", ".join(
        f"s{seed} SLW {fmt(r.sensitivity_a)} vs {fmt(r.sensitivity_b)}" for seed, r in s.iterrows()
    )
    if not u:
        return _claim(key, measured, INCONCLUSIVE, "no unstable regime in the grid")
    if not len(d) or set(d["lr"]) != set(u) or not len(s):
        return _claim(key, measured, NOT_TESTED, f"SLW and {control} lack a seed pair at some LR in U")
    area = d["d_excess_area"].to_numpy(float)
    sens = s["sensitivity_a"].to_numpy(float) - s["sensitivity_b"].to_numpy(float)
    if np.isnan(area).any() or np.isnan(sens).any():
        return _claim(key, measured, INCONCLUSIVE, "a difference is NaN")
    if (area < 0).all() and (sens < 0).all():
        return _claim(key, measured, SUPPORTED, f"SLW better than {control} in every pair on both")
    if (area >= 0).all() and (sens >= 0).all():
        return _claim(key, measured, REFUTED, f"{control} as good or better in every pair on both")
    return _claim(key, measured, INCONCLUSIVE, "the pairs or the two measures disagree")


def spearman(x, y) -> float:
    """Spearman rho of the finite pairs; NaN with fewer than 3 or a constant side."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return math.nan
    # rank then Pearson: scipy's spearmanr costs ~1 ms a call, too slow for thousands of resamples
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def correlations(rows: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Per Adam state: Spearman rho (early max vs peak probe loss ratio) over runs, 95% run bootstrap."""
    out = []
    for state in STATES:
        pairs = list(zip(rows[f"early_{state}"].astype(float), rows["peak_ratio"].astype(float)))
        iv = run_bootstrap(pairs, lambda p: spearman([a for a, _ in p], [b for _, b in p]), n_boot=n_boot)
        out.append({"state": state, "rho": iv.estimate, "low": iv.low, "high": iv.high, "n_runs": iv.n_runs})
    return pd.DataFrame(out)


def c5_correlation(rows: pd.DataFrame, n_boot: int = 2000) -> tuple[Claim, pd.DataFrame]:
    corr = correlations(rows, n_boot)
    measured = (
        "; ".join(f"{r.state} rho = {fmt(r.rho)} [{fmt(r.low)}, {fmt(r.high)}]" for r in corr.itertuples())
        + f" (n = {len(rows)} runs)"
    )
    r = corr.set_index("state").loc["adam_vhat_max"]
    if math.isnan(r["rho"]) or math.isnan(r["low"]):
        return _claim("C5", measured, INCONCLUSIVE, "rho or its interval is NaN (too few or constant runs)"), corr
    if r["rho"] >= 0.5 and r["low"] > 0:
        return _claim("C5", measured, SUPPORTED, "rho >= 0.5 and the interval excludes 0"), corr
    if r["high"] < 0.3:
        return _claim("C5", measured, REFUTED, "the interval lies below 0.3"), corr
    return _claim("C5", measured, INCONCLUSIVE, "rho < 0.5 or the interval reaches 0, and it reaches 0.3"), corr


def _wall_text(rows: pd.DataFrame, s: pd.DataFrame) -> str:
    def walls(arm, col):
        g = rows[rows["arm"] == arm].set_index(["seed", "lr"])["wall_time_s"]
        return np.array([float(g.loc[(k, v)]) for k, v in s[col].items()])

    a, b = walls("slw", "best_lr_a"), walls("baseline", "best_lr_b")
    diff, spread = float(a.mean() - b.mean()), max(np.ptp(a), np.ptp(b))
    if np.isfinite(diff) and abs(diff) > spread:
        return f"wall time at the best LR SLW {fmt(a.mean())} s vs baseline {fmt(b.mean())} s"
    return "wall time not compared (the difference is within the seed-to-seed spread)"


def c7_efficiency(rows: pd.DataFrame, outcomes: pd.DataFrame, m: float) -> Claim:
    s = _per_seed(outcomes, "slw", "baseline")
    if not len(s):
        return _claim("C7", "no seed has both SLW and the baseline", NOT_TESTED, "no seed pair")
    d = (s["best_loss_a"] - s["best_loss_b"]).to_numpy(float)
    measured = "; ".join(
        f"s{seed}: SLW {fmt(r.best_loss_a)} (LR {r.best_lr_a:g}) vs baseline {fmt(r.best_loss_b)} (LR {r.best_lr_b:g})"
        for seed, r in s.iterrows()
    )
    measured += f"; m = {fmt(m)}; " + _wall_text(rows, s)
    if np.isnan(d).any() or math.isnan(m):
        return _claim("C7", measured, INCONCLUSIVE, "a best loss or m is NaN")
    if (d < -m).all():
        return _claim("C7", measured, SUPPORTED, "SLW's best loss lower by > m in every seed")
    if (d > m).all():
        return _claim("C7", measured, REFUTED, "SLW's best loss higher by > m in every seed")
    return _claim("C7", measured, INCONCLUSIVE, "the difference is within m in some seed, or the seeds disagree")


def evaluate(rows: pd.DataFrame, outcomes: pd.DataFrame, m: float, n_boot: int = 2000) -> tuple[list, pd.DataFrame]:
    """Every claim of the rules in order (C1-C5, C7) and C5's correlation table."""
    c5, corr = c5_correlation(rows, n_boot)
    claims = [
        c1_stability(rows, m),
        c2_dilemma(outcomes, m),
        c3_attribution(rows, outcomes, "batch-warmup", "C3"),
        c3_attribution(rows, outcomes, "warmup20", "C4"),
        c5,
        c7_efficiency(rows, outcomes, m),
    ]
    return claims, corr


def as_row(claim) -> dict:
    """A Claim or a Claim-like dict (claim, rule, measured, verdict, why; source optional) as a dict."""
    d = claim.as_dict() if isinstance(claim, Claim) else dict(claim)
    return {k: str(d.get(k, "")) for k in ("claim", "source", "rule", "measured", "verdict", "why")}


def rules_md(extra=()) -> list[str]:
    """The rules section, verbatim; extra claims add their own rule lines."""
    lines = ["## Decision rules (fixed before the runs)", "", DEFINITIONS, ""]
    lines += [f"- **{k}** ({CLAIMS[k][0]}; source: {CLAIMS[k][1]}): {text}" for k, text in RULES.items()]
    lines += [f"- **{r['claim']}**: {r['rule']}" for r in map(as_row, extra)]
    return [*lines, ""]
