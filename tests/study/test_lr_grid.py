"""The LR-grid tables and the decision rules on constructed tables whose verdicts are known by hand."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.records.load import Run
from study.report import lr_rules as R
from study.stats.lr_grid import arm_outcomes, noise_margin, paired, run_row, unstable_lrs

LRS = (0.01, 0.1, 1.0)


def row(arm, lr, seed, loss, ratio=1.0, area=0.0, vhat=1.0, wall=10.0):
    r = {"arm": arm, "lr": lr, "seed": seed, "final_val_loss": loss, "peak_ratio": ratio, "excess_area": area}
    r |= {f"early_{s}": vhat for s in ("adam_vhat_max", "adam_vhat_l1", "adam_v_max", "adam_v_l1")}
    return r | {"wall_time_s": wall}


def grid(cells) -> pd.DataFrame:
    """cells: {(arm, lr): (loss, ratio, area)} copied to seeds 0 and 1, seed 1's loss + 0.01."""
    return pd.DataFrame(
        [row(a, lr, s, loss + 0.01 * s, ratio, area) for (a, lr), (loss, ratio, area) in cells.items() for s in (0, 1)]
    )


def base_cells(**arms):
    """Baseline: best 3.0 at LR 0.01, unstable at LR 1 (ratio 2, area 1.0); other arms as given."""
    cells = {
        ("baseline", 0.01): (3.0, 1.0, 0.0),
        ("baseline", 0.1): (3.2, 1.1, 0.1),
        ("baseline", 1.0): (4.0, 2.0, 1.0),
    }
    for name, per_lr in arms.items():
        cells.update({(name.replace("_", "-"), lr): v for lr, v in zip(LRS, per_lr)})
    return cells


def verdicts(rows, m=None):
    m = noise_margin(rows)[0] if m is None else m
    claims, _ = R.evaluate(rows, arm_outcomes(rows), m, n_boot=200)
    return {c.claim.split()[0]: c.verdict for c in claims}


def test_noise_margin_by_hand():
    rows = pd.DataFrame([row("a", 0.1, 0, 3.0), row("a", 0.1, 1, 3.1), row("a", 1.0, 0, 3.0), row("a", 1.0, 1, 3.3)])
    rows = pd.concat([rows, pd.DataFrame([row("b", 0.1, 0, 2.0), row("b", 0.1, 1, 2.05), row("b", 1.0, 0, 5.0)])])
    m, note = noise_margin(rows)  # ranges 0.1, 0.3, 0.05 (the one-seed cell has none): median 0.1
    assert m == pytest.approx(0.2) and "3 cells" in note
    assert noise_margin(rows.assign(final_val_loss=rows["final_val_loss"] * 0 + 3.0))[0] == 0.02
    m1, why = noise_margin(rows[rows["seed"] == 0])
    assert m1 == 0.1 and "one seed" in why  # a one-seed grid: the stated 0.1-nat margin, not a measured one


def test_outcomes_and_pairs_by_hand():
    rows = grid(base_cells(slw=[(3.05, 1.0, 0.0), (3.1, 1.0, 0.0), (3.12, 1.3, 0.2)]))
    out = arm_outcomes(rows).set_index(["arm", "seed"])
    assert out.loc[("baseline", 0), "sensitivity"] == pytest.approx((0 + 0.2 + 1.0) / 3)
    assert out.loc[("slw", 0), "sensitivity"] == pytest.approx((0 + 0.05 + 0.07) / 3)
    assert out.loc[("baseline", 0), "largest_lr_within"] == 0.01 and out.loc[("slw", 1), "largest_lr_within"] == 1.0
    d = paired(rows, "slw", "baseline").set_index(["lr", "seed"])
    assert d.loc[(1.0, 1), "d_final_val_loss"] == pytest.approx(3.12 - 4.0)
    assert d.loc[(1.0, 0), "d_excess_area"] == pytest.approx(0.2 - 1.0)
    assert unstable_lrs(rows) == [1.0]
    with pytest.raises(ValueError, match="two runs"):
        arm_outcomes(pd.concat([rows, rows.iloc[:1]]))


def test_c1_c2_c7_supported_and_c3_supported():
    slw = [(2.9, 1.0, 0.0), (2.95, 1.0, 0.0), (3.0, 1.1, 0.1)]  # better everywhere, stable at LR 1
    ctl = [(3.0, 1.0, 0.0), (3.2, 1.1, 0.1), (3.9, 1.8, 0.8)]  # token-matched control: like the baseline
    v = verdicts(grid(base_cells(slw=slw, batch_warmup=ctl)), m=0.05)
    assert v == {"C1": "supported", "C2": "supported", "C3": "supported", "C4": "not tested"} | {
        "C5": v["C5"],
        "C7": "supported",
    }


def test_refuted_cases():
    slw = [(3.2, 1.0, 0.0), (3.5, 1.5, 0.5), (4.5, 3.0, 2.0)]  # worse at every LR, more excess area at U
    warm = [(2.9, 1.0, 0.0), (3.0, 1.0, 0.0), (3.1, 1.1, 0.1)]  # the 20-step warmup beats it on both
    v = verdicts(grid(base_cells(slw=slw, warmup20=warm)), m=0.05)
    assert (v["C1"], v["C2"], v["C4"], v["C7"]) == ("refuted",) * 4


def test_inconclusive_cases():
    slw = [(3.0, 1.0, 0.0), (3.2, 1.1, 0.1), (3.95, 1.9, 0.9)]  # within m of the baseline
    rows = grid(base_cells(slw=slw))
    rows.loc[(rows["arm"] == "slw") & (rows["lr"] == 1.0) & (rows["seed"] == 1), "excess_area"] = 1.5  # pairs disagree
    v = verdicts(rows, m=0.1)
    assert (v["C1"], v["C2"], v["C7"]) == ("inconclusive",) * 3
    stable = grid({("baseline", lr): (3.0, 1.1, 0.0) for lr in LRS} | {("slw", lr): (3.0, 1.1, 0.0) for lr in LRS})
    c1 = R.c1_stability(stable, 0.05)
    assert c1.verdict == "inconclusive" and c1.why == "no unstable regime in the grid"


def test_c1_less_area_but_worse_loss_is_inconclusive():
    slw = [(3.0, 1.0, 0.0), (3.2, 1.0, 0.0), (4.3, 1.5, 0.5)]  # less excess area at U, final loss 0.3 worse
    c1 = R.c1_stability(grid(base_cells(slw=slw)), 0.1)
    assert c1.verdict == "inconclusive" and "worse by > m" in c1.why


def test_c3_refuted_when_the_control_is_as_good():
    slw = [(2.9, 1.0, 0.0), (2.95, 1.0, 0.0), (3.0, 1.1, 0.1)]
    rows = grid(base_cells(slw=slw, batch_warmup=slw))  # identical: "as good or better" on both
    assert R.c3_attribution(rows, arm_outcomes(rows)).verdict == "refuted"


def _corr_rows(ratio_of_v):
    v = np.linspace(1, 12, 12)
    return pd.DataFrame(
        [row("baseline", 0.1 * (i + 1), 0, 3.0, ratio=ratio_of_v(x, i), vhat=x) for i, x in enumerate(v)]
    )


def test_c5_supported_refuted_inconclusive():
    c, corr = R.c5_correlation(_corr_rows(lambda x, i: 1 + x / 10), n_boot=300)
    assert c.verdict == "supported" and corr.set_index("state").loc["adam_vhat_max", "rho"] == pytest.approx(1.0)
    assert R.c5_correlation(_corr_rows(lambda x, i: 3 - x / 10), n_boot=300)[0].verdict == "refuted"
    zigzag = [1.0, 3.0, 1.5, 2.5, 1.2, 2.8, 1.1, 2.9, 1.3, 2.7, 1.4, 2.6]
    assert R.c5_correlation(_corr_rows(lambda x, i: zigzag[i]), n_boot=300)[0].verdict == "inconclusive"


def test_spearman_matches_scipy_and_handles_nan():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=20), rng.normal(size=20)
    y[4] = np.inf
    assert R.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    x[0] = np.nan
    assert R.spearman(x, y) == pytest.approx(spearmanr(x[1:], y[1:]).statistic)
    assert math.isnan(R.spearman([1, 1, 1], [1, 2, 3]))


def test_run_row_early_window_cap_and_clip(tmp_path: Path):
    steps = pd.DataFrame(
        {
            "step": np.arange(1, 13),
            "tokens": np.arange(1, 13) * 250_000.0,
            "adam_vhat_max": [0.1, 0.5, 0.2, 0.3, 0.9, 0.4, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0],
            "adam_vhat_l1": [0.96] + [0.5] * 11,
            "adam_v_max": np.arange(12) / 10,
            "adam_v_l1": np.ones(12),
            "probe_loss_ratio": [1.0, 1.5, 2.0, 1.0] + [np.nan] * 8,
        }
    )
    (tmp_path / "summary.json").write_text(json.dumps({"final_val_loss": float("nan"), "wall_time_s": 7.0}))
    cfg = {"optim": {"warmup_steps": 2, "clip": 1.0}, "meta": {"vocab_size": 2048}}
    run = Run("r", tmp_path, cfg, "slw", 8, 0.1, 0, steps, *(pd.DataFrame() for _ in range(4)))
    r = run_row(run)
    assert r["early_adam_vhat_max"] == 0.9 and r["early_adam_v_max"] == pytest.approx(0.5)  # steps <= 6
    assert r["final_val_loss"] == pytest.approx(math.log(2048)) and "capped at ln(vocab)" in r["note"]
    assert r["peak_ratio"] == 2.0 and r["unstable"]
    assert r["excess_area"] == pytest.approx(0.25 * 0.5 / 2 + 0.25 * 1.5 / 2 + 0.25 * 1.0 / 2)
    assert r["vhat_l1_cap_frac"] == pytest.approx(0.96) and r["at_clip_cap"]
    assert math.isnan(r["epochs"]) and "epochs" in r["note"] and r["wall_time_s"] == 7.0
