"""The run-level bootstrap against a naive resampling loop, and the LR-sensitivity outcomes against values
worked out by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from study.stats.bootstrap import pooled, run_bootstrap
from study.stats.lr_sensitivity import excess_area, largest_lr_within, lr_curves, lr_sensitivity, peak_ratio


def _runs(n=6, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):  # runs of different lengths with a run-level offset: steps within a run correlate
        k = 20 + 7 * i
        x = rng.normal(size=k) + rng.normal()
        out.append({"x": x, "y": 0.5 * x + rng.normal(size=k)})
    return out


def _spearman(runs):
    x = np.concatenate([r["x"] for r in runs])
    y = np.concatenate([r["y"] for r in runs])
    return stats.spearmanr(x, y).statistic


def _naive(runs, statistic, n_boot, seed, level=0.95):
    """One run index at a time, one resample at a time, from the same generator stream."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        sample = []
        for _ in range(len(runs)):
            sample.append(runs[int(rng.integers(0, len(runs)))])
        values.append(statistic(sample))
    values = np.array(values)
    values = values[np.isfinite(values)]
    return np.quantile(values, [(1 - level) / 2, (1 + level) / 2])


@pytest.mark.parametrize("stat", [_spearman, pooled(lambda r: r["x"], np.median)], ids=["spearman", "median"])
def test_bootstrap_matches_naive_loop(stat):
    runs = _runs()
    got = run_bootstrap(runs, stat, n_boot=300, seed=7)
    low, high = _naive(runs, stat, 300, seed=7)
    assert got.estimate == pytest.approx(stat(runs))
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-12)
    assert got.low < got.estimate < got.high and got.n_runs == 6 and got.n_finite == 300


def test_bootstrap_over_runs_is_wider_than_over_steps():
    """Runs with their own offsets: resampling steps as if independent understates the spread of the mean."""
    runs = _runs(n=8)
    by_run = run_bootstrap(runs, pooled(lambda r: r["x"], np.mean), n_boot=500)
    steps = [{"x": np.array([v])} for r in runs for v in r["x"]]
    by_step = run_bootstrap(steps, pooled(lambda r: r["x"], np.mean), n_boot=500)
    assert by_run.estimate == pytest.approx(by_step.estimate)
    assert by_run.high - by_run.low > 2 * (by_step.high - by_step.low)


@pytest.mark.filterwarnings("ignore:An input array is constant")
def test_bootstrap_degenerate_cases():
    one = run_bootstrap([{"x": np.arange(5.0)}], pooled(lambda r: r["x"], np.mean))
    assert one.estimate == 2.0 and math.isnan(one.low) and math.isnan(one.high)
    same = [{"x": np.ones(4), "y": np.arange(4.0)}] * 3  # constant x: every Spearman is NaN
    res = run_bootstrap(same, _spearman, n_boot=50)
    assert res.n_finite == 0 and math.isnan(res.low)


def test_lr_sensitivity_outcomes():
    curve = {0.01: 6.0, 0.03: 5.5, 0.1: 5.58, 0.3: 6.3, 1.0: float("nan")}
    assert math.isnan(lr_sensitivity(curve)) and math.isnan(largest_lr_within(curve))  # a diverged run, no cap
    # capped at the initial loss 9.0: excesses 0.5, 0, 0.08, 0.8, 3.5
    assert lr_sensitivity(curve, cap=9.0) == pytest.approx((0.5 + 0 + 0.08 + 0.8 + 3.5) / 5)
    assert largest_lr_within(curve, 0.1, cap=9.0) == 0.1
    assert largest_lr_within(curve, 0.05, cap=9.0) == 0.03
    assert lr_sensitivity({0.1: 5.0, 0.3: 5.0}) == 0.0 and largest_lr_within({0.1: 5.0, 0.3: 5.0}) == 0.3


def test_instability_measures():
    steps = np.array([1, 2, 3, 4, 5, 10, 15])
    ratio = np.array([1.0, 1.0, 1.5, 2.0, 1.0, np.nan, 1.0])  # NaN: no probe at step 10
    assert peak_ratio(ratio) == 2.0
    # trapezoids of max(0, r - 1): (0+0.5)/2 + (0.5+1)/2 + (1+0)/2 = 1.5; the gap 5 -> 15 adds 0
    assert excess_area(steps, ratio) == pytest.approx(1.5)
    assert excess_area(2 * steps, ratio) == pytest.approx(3.0)  # over tokens (2 per step): twice the area
    assert excess_area(steps, np.where(steps == 4, np.inf, ratio)) == math.inf
    assert math.isnan(excess_area([1], [1.2])) and math.isnan(peak_ratio([np.nan]))


def test_lr_curves_groups_runs_and_refuses_duplicates():
    rows = [("slw", 0, 0.1, 6.2), ("slw", 0, 0.3, 6.5), ("baseline", 0, 0.1, 6.3)]
    assert lr_curves(rows) == {("slw", 0): {0.1: 6.2, 0.3: 6.5}, ("baseline", 0): {0.1: 6.3}}
    with pytest.raises(ValueError, match="two runs"):
        lr_curves([*rows, ("slw", 0, 0.1, 6.0)])
