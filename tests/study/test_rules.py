"""The study's rules on constructed outcome tables: each verdict (supported, refuted, not shown), the
positive-control gate, and the measures they rest on (steps to target, excess over steps, blow-ups, the
within-LR correlation, the common early window)."""

import math

import numpy as np
import pandas as pd
import pytest

from study.stats import rules as R
from study.stats.outcomes import blowups, excess_over_steps, run_outcomes, steps_to_target
from study.stats.within_lr import common_window, early_max, within_lr_spearman


def row(arm, lr, seed, steps=math.nan, ratio=1.05, blowup=False, final=5.0, batch=32):
    return {
        "arm": arm,
        "lr": lr,
        "seed": seed,
        "batch": batch,
        "steps_to_target": steps,
        "peak_ratio": ratio,
        "blowup": blowup,
        "blowup_max": 9.5 if blowup else math.nan,
        "final_val_loss": final,
    }


def dilemma(next_ratio=(2.0, 2.5), control_ratio=(1.05, 1.1), control_steps=(30, 32)):
    """Baseline best at LR 0.06 (40, 42 steps), spiking at 0.12; the control at 0.12 per the arguments."""
    rows = [row("baseline", 0.03, s, 200, batch=8) for s in (0, 1)]  # the reference batch is not the large one
    rows += [row("baseline", 0.03, s, 48) for s in (0, 1)]
    rows += [row("baseline", 0.06, s, 40 + 2 * s, 1.1) for s in (0, 1)]
    rows += [row("baseline", 0.12, s, math.nan, next_ratio[s]) for s in (0, 1)]
    rows += [row("warmup12", 0.12, s, control_steps[s], control_ratio[s]) for s in (0, 1)]
    return pd.DataFrame(rows)


def test_d1_supported_refuted_not_shown():
    v = R.d1(dilemma())
    assert (v.verdict, v.extra) == (R.SUPPORTED, {"best": 0.06, "next": 0.12}) and len(v.values) == 2
    assert R.d1(dilemma(next_ratio=(1.15, 1.12))).verdict == R.REFUTED  # no spike above 1.2
    near = dilemma(next_ratio=(1.25, 1.28))
    near.loc[(near["arm"] == "baseline") & (near["lr"] == 0.06), "peak_ratio"] = 1.2
    assert R.d1(near).verdict == R.REFUTED  # above 1.2 but less than 0.1 above the best LR's own spike
    assert R.d1(dilemma(next_ratio=(2.0, 1.1))).verdict == R.NOT_SHOWN  # seeds disagree
    top = dilemma()
    top.loc[(top["arm"] == "baseline") & (top["lr"] == 0.12), "steps_to_target"] = [30, 31]
    assert R.d1(top).verdict == R.NOT_SHOWN and "largest" in R.d1(top).why  # the best LR is the top of the grid
    blown = dilemma(next_ratio=(1.0, 1.0))
    blown.loc[(blown["arm"] == "baseline") & (blown["lr"] == 0.12), "blowup"] = True
    assert R.d1(blown).verdict == R.SUPPORTED  # a blow-up counts whatever the ratio


def test_d2_and_the_positive_control_gate():
    o = dilemma()
    v1, v2 = R.d1(o), R.d2(o)
    assert v2.verdict == R.SUPPORTED and v2.extra["faster"] == [("warmup12", 0.12)]  # 30 <= 0.9 x 40, 32 <= 0.9 x 42
    assert R.gate(o, v1, v2).verdict == "passed"
    slow = dilemma(control_steps=(38, 39))  # 38 > 0.9 x 40: within the margin, not faster
    assert R.d2(slow).verdict == R.REFUTED
    assert R.gate(slow, R.d1(slow), R.d2(slow)).verdict == "passed"  # still stable where the baseline spikes
    mixed = dilemma(control_steps=(30, 41))
    assert R.d2(mixed).verdict == R.NOT_SHOWN and "disagree" in R.d2(mixed).why
    assert R.d2(o, measurable=False).verdict == R.NOT_SHOWN
    # the control spikes where the baseline does, and is not faster: the design cannot show the dilemma
    bad = dilemma(control_ratio=(2.1, 2.2), control_steps=(math.nan, math.nan))
    g = R.gate(bad, R.d1(bad), R.d2(bad))
    assert g.verdict == "failed" and "unstable" in g.why
    flat = dilemma(next_ratio=(1.1, 1.1), control_steps=(45, 45))  # D1 refuted and the control not faster
    assert R.gate(flat, R.d1(flat), R.d2(flat)).verdict == "failed"
    ev = R.evaluate(o, pd.DataFrame(), 30, True)
    assert list(ev) == ["G", "D1", "D2", "D3", "D4", "S"] and all(ev[k].rule == R.RULES[k] for k in ev)


def pair(a_ratio, b_ratio, a_steps=(30, 30), b_steps=(30, 30), b="batch-warmup"):
    return pd.DataFrame(
        [row("slw", 0.12, s, a_steps[s], a_ratio[s]) for s in (0, 1)]
        + [row(b, 0.12, s, b_steps[s], b_ratio[s]) for s in (0, 1)]
    )


def test_d3_d4_compare_rule():
    assert R.d3(pair((1.3, 1.4), (1.9, 2.0))).verdict == R.SUPPORTED  # lower peak by >= 0.1 in both seeds
    assert R.d3(pair((1.9, 2.0), (1.3, 1.4))).verdict == R.REFUTED
    assert R.d3(pair((1.5, 1.5), (1.55, 1.45))).verdict == R.REFUTED  # a spike, and within 0.1 in both seeds
    assert R.d3(pair((1.3, 2.0), (1.9, 1.4))).verdict == R.NOT_SHOWN  # the seeds disagree
    none = pair((1.05, 1.1), (1.1, 1.0), (math.nan,) * 2, (math.nan,) * 2)
    v = R.d3(none)
    assert v.verdict == R.NOT_SHOWN and "nothing to tell apart" in v.why  # no spike and no target: not counted
    trade = pair((1.3, 1.3), (1.9, 1.9), a_steps=(40, 40), b_steps=(30, 30))
    assert R.d3(trade).verdict == R.NOT_SHOWN and "but worse" in R.d3(trade).why
    faster = pair((1.05, 1.05), (1.05, 1.05), a_steps=(30, 31), b_steps=(40, math.nan))  # b misses in seed 1
    assert R.d3(faster).verdict == R.SUPPORTED
    assert R.d4(pair((1.3, 1.4), (1.9, 2.0), b="warmup12")).verdict == R.SUPPORTED
    blow = pd.DataFrame(
        [row("slw", 0.12, s, ratio=1.5) for s in (0, 1)] + [row("warmup12", 0.12, s, blowup=True) for s in (0, 1)]
    )
    assert R.d4(blow).verdict == R.SUPPORTED


def probes(ratio_by_seed):
    rows = []
    for seed, ratio in ratio_by_seed.items():
        for step in (2, 4, 30, 40):
            for length, value in ((16, 1.0), (512, ratio if step <= 30 else 10.0)):
                rows.append({"lr": 0.06, "seed": seed, "step": step, "probe_seqlen": length, "grad_sq_max": value})
    return pd.DataFrame(rows)


def test_length_rule():
    assert R.length_rule(probes({0: 1.5, 1: 1.3}), 30).verdict == R.SUPPORTED  # step 40 lies outside the window
    assert R.length_rule(probes({0: 1.02, 1: 0.9}), 30).verdict == R.REFUTED
    assert R.length_rule(probes({0: 1.5, 1: 1.0}), 30).verdict == R.NOT_SHOWN
    assert R.length_rule(pd.DataFrame(), 30).verdict == R.NOT_SHOWN
    mixed = pd.concat(
        [probes({0: 1.5, 1: 1.3}).assign(batch=32, arm="baseline"), probes({0: 0.5}).assign(batch=8, arm="baseline")]
    )  # a reference run's probe at batch 8
    assert R.length_rule(mixed, 30).verdict == R.SUPPORTED and len(R.length_units(mixed, 30)) == 2
    units = R.length_units(probes({0: 1.5, 1: 1.3}), 30)
    assert units["ratio"].tolist() == pytest.approx([1.5, 1.3]) and units["steps"].tolist() == [3, 3]


def test_steps_to_target_excess_and_blowups():
    step = np.array([1, 2, 3, 4, 5, 6])
    loss = np.array([9.0, np.nan, 6.4, 6.2, 6.5, 6.0])
    assert steps_to_target(step, loss, 6.3) == (4.0, 3)  # the first step at or below, NaN skipped
    assert math.isnan(steps_to_target(step, loss, 5.0)[0])
    assert steps_to_target(step[::-1], loss[::-1], 6.3)[0] == 4.0  # order of the rows does not matter
    ratio = np.array([1.0, 1.5, 1.5, 1.0, np.nan, 1.0])
    assert excess_over_steps(step, ratio) == pytest.approx(0.25 + 0.5 + 0.25)  # by hand: trapezoids over steps
    assert math.isinf(excess_over_steps(step, [1, 1, np.inf, 1, 1, 1]))
    assert blowups(step, [9.5, 1, np.inf, 1, np.nan, 9.0], 9.01) == [(1, 9.5), (3, math.inf)]
    steps = pd.DataFrame({"step": step, "tokens": step * 100, "probe_loss": loss, "probe_loss_ratio": ratio})
    out = run_outcomes(steps, 6.3, 9.01)
    assert (out["steps_to_target"], out["tokens_to_target"], out["peak_ratio"], out["blowup"]) == (4, 400, 1.5, False)
    assert out["final_probe_loss"] == 6.0 and out["peak_step"] == 2


def test_within_lr_spearman_never_pools():
    # within each LR the signal ranks the peaks perfectly in opposite directions; pooled, the LR would dominate
    df = pd.DataFrame(
        {"lr": [0.06] * 4 + [0.12] * 4 + [0.24] * 2, "x": [1, 2, 3, 4, 10, 20, 30, 40, 5, np.nan]}
        | {"peak_ratio": [1.1, 1.2, 1.3, 1.4, 3.0, 2.9, 2.8, 2.7, 5.0, 6.0]}
    )
    out = within_lr_spearman(df, "x").set_index("lr")
    assert out.loc[0.06, "rho"] == pytest.approx(1.0) and out.loc[0.12, "rho"] == pytest.approx(-1.0)
    assert out.loc[0.24, "n"] == 1 and math.isnan(out.loc[0.24, "rho"])  # a NaN row is left out, too few remain


def test_common_early_window_and_early_max():
    runs = [
        {"last_step": 50, "warmup_steps": 5, "slw_steps": 0},
        {"last_step": 50, "warmup_steps": 12, "slw_steps": 0},
        {"last_step": 50, "warmup_steps": 5, "slw_steps": 30},
    ]
    assert common_window(runs) == (1, 30)  # SLW's 30 steps outlast 2 x 12
    assert common_window([*runs, {"last_step": 20, "warmup_steps": 5, "slw_steps": 0}]) == (1, 20)
    s = pd.DataFrame({"step": [1, 2, 3, 40], "grad_var_max": [np.nan, 2.0, np.nan, 9.0]})
    assert early_max(s, "grad_var_max", 30) == 2.0 and math.isnan(early_max(s, "missing", 30))
