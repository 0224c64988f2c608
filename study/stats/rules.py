"""The study's decision rules D1-D4, the positive-control gate G and the length rule S, as code with their text.

Written before the runs. Inputs are tidy tables: `outcomes` has one row per run (arm, lr, batch, seed, role,
steps_to_target, peak_ratio, blowup, ...; study.stats.outcomes) and `probes` one row per (run, step,
probe_seqlen). The seed is the unit: every verdict needs the same sign in every seed (n <= 3 seeds: no
bootstrap interval is meaningful), and every difference has a stated margin, so a difference smaller than it
can neither support nor veto a pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SPIKE = 1.2
"""A spike: the probe loss rises above 1.2 x its best so far (peak probe-loss ratio > 1.2)."""
RATIO_MARGIN = 0.1
"""Margin on a difference of peak probe-loss ratios."""
STEP_MARGIN = 0.10
"""Margin on steps to target: 'fewer steps' means at most (1 - 0.10) x the other's steps."""
LENGTH_RATIO = 1.25
"""Margin of the length rule: the longest probe length's grad_sq_max at least 1.25 x the shortest's."""
BASELINE, SLW, MATCHED = "baseline", "slw", "batch-warmup"
"""The arms: the baseline (5-step LR warmup), SLW and its token-matched control (full-length sequences at SLW's
tokens per step); the positive control is the arm named warmup<N> (a longer LR warmup: a known stabiliser)."""


def control_arm(o: pd.DataFrame) -> str:
    """The positive control: the arm whose name starts with 'warmup' (warmup12 in `cpu`)."""
    names = sorted(a for a in set(o["arm"]) if str(a).startswith("warmup")) if len(o) else []
    return names[0] if names else "warmup"


RULES = {
    "G": "Positive control. The longer LR warmup (the warmup<N> arm) resolves the dilemma when D1 is supported "
    "and it is stable at the LR that limits the baseline in every seed (no blow-up, no spike), or when it is "
    "one of the arms that support D2. If it does neither, the design cannot show the dilemma at this scale, "
    "and the report says so before anything about SLW.",
    "D1": "The dilemma exists. At the large batch, the baseline's best LR is the one reaching the target in the "
    "fewest steps in its worst seed (if none reaches it in every seed: the lowest mean final validation loss). "
    "Supported when a larger LR was run and at the next LR up every seed blows up (probe loss above ln V) or "
    "spikes (peak probe-loss ratio above 1.2 and at least 0.1 above the same seed's at the best LR); refuted "
    "when no seed does; not shown when the seeds disagree or the best LR is the largest run.",
    "D2": "A stabiliser buys serial-step efficiency. Some arm at an LR above the baseline's best reaches the "
    "target in at most 0.9 x the steps of the baseline at its best LR, in every seed (paired). Refuted when "
    "every such arm and LR misses that in every seed; not shown when the seeds disagree, the baseline at its best "
    "LR misses the target in a seed, the target is not measurable, or no arm ran above the baseline's best LR.",
    "D3": "SLW beats its token-matched control (short sequences, not fewer tokens per step, do the work). At each "
    "LR both ran, paired by seed, on two outcomes: stability (peak probe-loss ratio, better by at least 0.1, or "
    "the other arm blows up) and serial-step efficiency (steps to target, at most 0.9 x, or only one arm reaches "
    "it). A cell (LR, outcome) counts when its sign is the same in every seed; stability cells only where "
    "either arm spikes or blows up in some seed, efficiency cells only where either arm reaches the target. "
    "Supported: some cell better and none worse; refuted: some cell worse and none better, or every counted "
    "cell within the margins in every seed; not shown: no cell counts, the seeds disagree, or cells conflict.",
    "D4": "SLW beats the longer LR warmup (the plain stabiliser it has to beat): the D3 rule with the longer LR "
    "warmup (12 steps in `cpu`) in place of the token-matched control.",
    "S": "Long sequences drive extreme gradient variance early. In the large-batch baseline's equal-token "
    "length probe at the probed steps of the common early window, the ratio of grad_sq_max at the longest "
    "length to that at the shortest (median over those steps) is a unit's value, one unit per (LR, seed). "
    "Supported when every unit is at least 1.25; refuted when every unit is below 1.25; not shown otherwise "
    "or without probes.",
}

SUPPORTED, REFUTED, NOT_SHOWN = "supported", "refuted", "not shown at this scale"


@dataclass
class Verdict:
    key: str
    verdict: str
    why: str
    values: list[str] = field(default_factory=list)
    """One line per seed value the verdict rests on (with its sign)."""
    extra: dict = field(default_factory=dict)

    @property
    def rule(self) -> str:
        return RULES[self.key]


def _large(o: pd.DataFrame) -> pd.DataFrame:
    return o[o["batch"] == o["batch"].max()]


def _arm(o: pd.DataFrame, arm: str) -> pd.DataFrame:
    return _large(o)[lambda d: d["arm"] == arm]


def _steps(v) -> float:
    return math.inf if not np.isfinite(v) else float(v)


def best_lr(base: pd.DataFrame) -> float:
    """The baseline's best LR: fewest steps to target in its worst seed (every seed must reach it); if no LR
    reaches it in every seed, the lowest mean final validation loss."""
    worst = base.groupby("lr")["steps_to_target"].apply(lambda s: max(_steps(v) for v in s))
    if np.isfinite(worst).any():
        return float(worst.idxmin())
    return float(base.groupby("lr")["final_val_loss"].mean().idxmin())


def unstable(row, ref) -> bool:
    """Blown up, or spiked (peak ratio > SPIKE and >= RATIO_MARGIN above `ref`, the same seed's row at the
    baseline's best LR)."""
    if bool(row["blowup"]):
        return True
    return bool(row["peak_ratio"] > SPIKE and row["peak_ratio"] >= ref["peak_ratio"] + RATIO_MARGIN)


def _by_seed(d: pd.DataFrame) -> dict:
    return {int(r["seed"]): r for _, r in d.iterrows()}


def d1(o: pd.DataFrame) -> Verdict:
    base = _arm(o, BASELINE)
    if not len(base):
        return Verdict("D1", NOT_SHOWN, "no large-batch baseline runs")
    best = best_lr(base)
    lrs = sorted(base["lr"].unique())
    ref = _by_seed(base[base["lr"] == best])
    if best == lrs[-1]:
        return Verdict(
            "D1", NOT_SHOWN, f"the baseline's best LR, {best:g}, is the largest it ran", extra={"best": best}
        )
    nxt = lrs[lrs.index(best) + 1]
    rows = _by_seed(base[base["lr"] == nxt])
    seeds = sorted(set(rows) & set(ref))
    flags = {s: unstable(rows[s], ref[s]) for s in seeds}

    def blow(row) -> str:
        return f" (blow-up to {row['blowup_max']:.3g})" if row["blowup"] else ""

    values = [
        f"seed {s}: LR {nxt:g} peak ratio {rows[s]['peak_ratio']:.3g}{blow(rows[s])} vs "
        f"{ref[s]['peak_ratio']:.3g}{blow(ref[s])} at LR {best:g} -> {'unstable' if flags[s] else 'stable'}"
        for s in seeds
    ]
    extra = {"best": best, "next": nxt}
    if seeds and all(flags.values()):
        return Verdict("D1", SUPPORTED, f"best LR {best:g}; at LR {nxt:g} every seed is unstable", values, extra)
    if seeds and not any(flags.values()):
        why = f"best LR {best:g}; at LR {nxt:g} no seed blows up or spikes: what limits the baseline is not instability"
        return Verdict("D1", REFUTED, why, values, extra)
    return Verdict("D1", NOT_SHOWN, f"best LR {best:g}; at LR {nxt:g} the seeds disagree", values, extra)


def d2(o: pd.DataFrame, measurable: bool = True) -> Verdict:
    base = _arm(o, BASELINE)
    if not measurable:
        return Verdict("D2", NOT_SHOWN, "the target is not measurable (the reference run never reaches it)")
    if not len(base):
        return Verdict("D2", NOT_SHOWN, "no large-batch baseline runs")
    best = best_lr(base)
    ref = _by_seed(base[base["lr"] == best])
    missed = [s for s, r in ref.items() if not np.isfinite(r["steps_to_target"])]
    if missed:
        return Verdict("D2", NOT_SHOWN, f"the baseline at its best LR {best:g} misses the target in seed(s) {missed}")
    cells, values = {}, []
    large = _large(o)
    for (arm, lr), g in large[(large["arm"] != BASELINE) & (large["lr"] > best)].groupby(["arm", "lr"]):
        rows = _by_seed(g)
        flags = {}
        for s in sorted(set(rows) & set(ref)):
            t, tb = _steps(rows[s]["steps_to_target"]), ref[s]["steps_to_target"]
            flags[s] = t <= (1 - STEP_MARGIN) * tb
            ratio = t / tb if math.isfinite(t) else math.inf
            values.append(
                f"{arm} LR {lr:g} seed {s}: {t:g} vs {tb:g} steps ({ratio:.2f}x) -> {'faster' if flags[s] else 'not'}"
            )
        cells[arm, lr] = "faster" if flags and all(flags.values()) else ("not" if not any(flags.values()) else "mixed")
    extra = {"best": best, "faster": [k for k, v in cells.items() if v == "faster"]}
    if not cells:
        return Verdict("D2", NOT_SHOWN, f"no arm ran above the baseline's best LR {best:g}", values, extra)
    faster = extra["faster"]
    if faster:
        names = ", ".join(f"{a} at LR {lr:g}" for a, lr in faster)
        return Verdict("D2", SUPPORTED, f"{names} beat(s) the baseline at LR {best:g} in every seed", values, extra)
    if all(v == "not" for v in cells.values()):
        why = f"no arm above LR {best:g} reaches the target in <= {1 - STEP_MARGIN:g}x the baseline's steps"
        return Verdict("D2", REFUTED, why, values, extra)
    return Verdict("D2", NOT_SHOWN, "the seeds disagree", values, extra)


def gate(o: pd.DataFrame, v1: Verdict, v2: Verdict) -> Verdict:
    CONTROL = control_arm(o)
    ctrl = _arm(o, CONTROL)
    faster = [(a, lr) for a, lr in v2.extra.get("faster", []) if a == CONTROL]
    if faster:
        return Verdict("G", "passed", f"the {CONTROL} arm reaches the target sooner at LR {faster[0][1]:g} (D2)")
    if v1.verdict == SUPPORTED:
        nxt, best = v1.extra["next"], v1.extra["best"]
        base = _arm(o, BASELINE)
        ref, rows = _by_seed(base[base["lr"] == best]), _by_seed(ctrl[ctrl["lr"] == nxt])
        seeds = sorted(set(ref) & set(rows))
        if seeds and not any(unstable(rows[s], ref[s]) for s in seeds):
            return Verdict("G", "passed", f"the {CONTROL} arm is stable at LR {nxt:g} in every seed")
        if not seeds:
            return Verdict(
                "G", "failed", f"the {CONTROL} arm did not run at LR {nxt:g}, the LR that limits the baseline"
            )
        return Verdict("G", "failed", f"the {CONTROL} arm is unstable at LR {nxt:g} too")
    return Verdict(
        "G", "failed", f"D1 is {v1.verdict} and the {CONTROL} arm does not reach the target sooner at a higher LR"
    )


def _sign(a: float, b: float, better: bool, worse: bool) -> str:
    return "better" if better else ("worse" if worse else "tie")


def stability_sign(a, b) -> tuple[str, bool]:
    """(sign of a vs b, informative): lower peak ratio by RATIO_MARGIN or b alone blowing up is better."""
    informative = bool(a["blowup"] or b["blowup"] or a["peak_ratio"] > SPIKE or b["peak_ratio"] > SPIKE)
    ra = math.inf if a["blowup"] else a["peak_ratio"]
    rb = math.inf if b["blowup"] else b["peak_ratio"]
    better = (rb == math.inf and ra < math.inf) or (ra < math.inf and ra <= rb - RATIO_MARGIN)
    worse = (ra == math.inf and rb < math.inf) or (rb < math.inf and rb <= ra - RATIO_MARGIN)
    return _sign(ra, rb, better, worse), informative


def efficiency_sign(a, b) -> tuple[str, bool]:
    """(sign of a vs b, informative): fewer steps to target by STEP_MARGIN, or a alone reaching it, is better."""
    ta, tb = _steps(a["steps_to_target"]), _steps(b["steps_to_target"])
    informative = math.isfinite(ta) or math.isfinite(tb)
    better = ta <= (1 - STEP_MARGIN) * tb and math.isfinite(ta)
    worse = tb <= (1 - STEP_MARGIN) * ta and math.isfinite(tb)
    return _sign(ta, tb, better, worse), informative


OUTCOMES = {"stability": (stability_sign, "peak_ratio"), "efficiency": (efficiency_sign, "steps_to_target")}


def paired_cells(o: pd.DataFrame, a: str, b: str, b_lr: float | None = None) -> pd.DataFrame:
    """One row per (lr, outcome, seed) where both arms ran: the two values, the sign of a vs b, informative.
    b_lr: compare every LR of a with b at that one LR (D2: an arm against the baseline at its best LR)."""
    A, B = _arm(o, a), _arm(o, b)
    rows = []
    lrs = sorted(set(A["lr"]) & set(B["lr"])) if b_lr is None else sorted(set(A["lr"]))
    for lr in lrs:
        ra, rb = _by_seed(A[A["lr"] == lr]), _by_seed(B[B["lr"] == (lr if b_lr is None else b_lr)])
        for s in sorted(set(ra) & set(rb)):
            for name, (fn, col) in OUTCOMES.items():
                sign, informative = fn(ra[s], rb[s])
                va, vb = ra[s][col], rb[s][col]
                rows.append(
                    {"lr": lr, "outcome": name, "seed": s, "a": va, "b": vb, "sign": sign, "informative": informative}
                    | {"a_blowup": bool(ra[s]["blowup"]), "b_blowup": bool(rb[s]["blowup"])}
                )
    return pd.DataFrame(rows)


def compare_rule(o: pd.DataFrame, key: str, a: str, b: str) -> Verdict:
    cells = paired_cells(o, a, b)
    if not len(cells):
        return Verdict(key, NOT_SHOWN, f"{a} and {b} never ran at the same LR and seed")

    def show(value, blown):
        return f"{value:.4g}" + (" (blow-up)" if blown else "")

    values = [
        f"LR {r.lr:g} {r.outcome} seed {r.seed}: {a} {show(r.a, r.a_blowup)} vs {b} {show(r.b, r.b_blowup)} -> "
        f"{r.sign}" + ("" if r.informative else " (not counted)")
        for r in cells.itertuples()
    ]
    kinds = {}
    for (lr, outcome), g in cells.groupby(["lr", "outcome"]):
        if not g["informative"].any():
            continue
        signs = set(g["sign"])
        kinds[lr, outcome] = signs.pop() if len(signs) == 1 else "mixed"
    found = {k: [c for c, v in kinds.items() if v == k] for k in ("better", "worse", "tie", "mixed")}
    name = lambda cs: ", ".join(f"{o} at LR {lr:g}" for lr, o in cs)  # noqa: E731
    extra = {"cells": kinds}
    if not kinds:
        return Verdict(
            key, NOT_SHOWN, "neither arm spikes, blows up or reaches the target: nothing to tell apart", values, extra
        )
    if found["better"] and not found["worse"]:
        return Verdict(key, SUPPORTED, f"{a} better than {b} in every seed: {name(found['better'])}", values, extra)
    if found["worse"] and not found["better"]:
        return Verdict(key, REFUTED, f"{a} worse than {b} in every seed: {name(found['worse'])}", values, extra)
    if not found["better"] and not found["worse"] and not found["mixed"]:
        why = f"no difference beyond the margins in any seed ({name(found['tie'])})"
        return Verdict(key, REFUTED, why, values, extra)
    if found["better"] and found["worse"]:
        why = f"better on {name(found['better'])} but worse on {name(found['worse'])}"
        return Verdict(key, NOT_SHOWN, why, values, extra)
    return Verdict(key, NOT_SHOWN, f"the seeds disagree ({name(found['mixed'])})", values, extra)


def d3(o: pd.DataFrame) -> Verdict:
    return compare_rule(o, "D3", SLW, MATCHED)


def d4(o: pd.DataFrame) -> Verdict:
    return compare_rule(o, "D4", SLW, control_arm(o))


def large_baseline_probes(probes: pd.DataFrame) -> pd.DataFrame:
    """The probe rows of the large-batch baseline (a reference run at another batch may probe too)."""
    p = probes
    if "batch" in p and len(p):
        p = p[p["batch"] == p["batch"].max()]
    return p[p["arm"] == BASELINE] if "arm" in p else p


def length_units(probes: pd.DataFrame, window_end: float, stat: str = "grad_sq_max") -> pd.DataFrame:
    """One row per (lr, seed) of the large-batch baseline: the median over probed steps <= window_end of
    stat(longest) / stat(shortest)."""
    p = large_baseline_probes(probes)
    p = p[p["step"] <= window_end]
    rows = []
    for (lr, seed), g in p.groupby(["lr", "seed"]):
        ratios = []
        for _, gs in g.groupby("step"):
            v = gs.set_index("probe_seqlen")[stat].astype(float).sort_index()
            if len(v) >= 2 and v.iloc[0] > 0:
                ratios.append(v.iloc[-1] / v.iloc[0])
        if ratios:
            rows.append({"lr": lr, "seed": int(seed), "ratio": float(np.median(ratios)), "steps": len(ratios)})
    return pd.DataFrame(rows)


def length_rule(probes: pd.DataFrame, window_end: float) -> Verdict:
    units = length_units(probes, window_end) if len(probes) else pd.DataFrame()
    if not len(units):
        return Verdict("S", NOT_SHOWN, "no equal-token length probe in the early window")
    values = [
        f"LR {u.lr:g} seed {u.seed}: longest / shortest = {u.ratio:.3g} (median of {u.steps} steps) -> "
        + ("at least" if u.ratio >= LENGTH_RATIO else "below")
        + f" {LENGTH_RATIO:g}"
        for u in units.itertuples()
    ]
    hi = units["ratio"] >= LENGTH_RATIO
    if hi.all():
        return Verdict("S", SUPPORTED, f"every unit at least {LENGTH_RATIO:g}x", values)
    if not hi.any():
        return Verdict(
            "S", REFUTED, f"no unit reaches {LENGTH_RATIO:g}x (median {units['ratio'].median():.3g}x)", values
        )
    return Verdict("S", NOT_SHOWN, "the units disagree", values)


def evaluate(o: pd.DataFrame, probes: pd.DataFrame, window_end: float, measurable: bool) -> dict[str, Verdict]:
    """Every rule in the report's order: G first (it frames the rest), then D1-D4 and S."""
    v1, v2 = d1(o), d2(o, measurable)
    return {"G": gate(o, v1, v2), "D1": v1, "D2": v2, "D3": d3(o), "D4": d4(o), "S": length_rule(probes, window_end)}
