"""Correlation, lag and early-warning analysis on constructed series with known answers."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.records import correlate as C
from analysis.records import ranking as R
from analysis.records import warning as W
from analysis.records.load import Run
from analysis.records.signals import in_spans


def test_correlation_matches_scipy_with_missing_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(500)
    y = 0.6 * x + rng.standard_normal(500)
    x[[3, 70]] = np.nan
    y[[10]] = np.inf
    out = C.correlation(x, y, n_boot=300)
    ok = np.isfinite(x) & np.isfinite(y)
    pr, pp = stats.pearsonr(x[ok], y[ok])
    sr, sp = stats.spearmanr(x[ok], y[ok])
    assert out["n"] == 497
    assert out["pearson_r"] == pytest.approx(pr, abs=1e-12) and out["pearson_p"] == pytest.approx(pp, rel=1e-6)
    assert out["spearman_r"] == pytest.approx(sr, abs=1e-12) and out["spearman_p"] == pytest.approx(sp, rel=1e-6)
    assert out["pearson_lo"] < pr < out["pearson_hi"] and out["spearman_lo"] < sr < out["spearman_hi"]
    assert out["block_len"] == C.block_length(497) == 8


def test_ties_rank_like_scipy():
    a = np.array([3.0, 1.0, 3.0, 2.0, 1.0])
    assert np.array_equal(W._rank(a), stats.rankdata(a))


def test_block_bootstrap_is_wider_for_autocorrelated_series():
    rng = np.random.default_rng(1)
    # Two independent random walks: spuriously correlated; a block bootstrap should not be overconfident.
    x, y = np.cumsum(rng.standard_normal(2000)), np.cumsum(rng.standard_normal(2000))
    blocky = C.correlation(x, y, n_boot=400)
    iid = C.correlation(x, y, n_boot=400, block_len=1)
    assert blocky["pearson_hi"] - blocky["pearson_lo"] > iid["pearson_hi"] - iid["pearson_lo"]


def test_segments_start_new_blocks():
    starts = C._block_starts(10, np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]), 3)
    assert list(starts) == [0, 3, 5, 8]


def test_planted_lead_detected_at_the_right_lag():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(3000)
    y = np.concatenate([np.zeros(3), x[:-3]]) + 0.3 * rng.standard_normal(3000)  # y_t = x_{t-3} + noise
    x[[5, 100]] = np.nan
    y[[50]] = np.nan
    lags = C.lagged_correlation(x, y, max_lag=6)
    best = lags.loc[lags["r"].abs().idxmax()]
    assert best["lag"] == 3 and best["r"] > 0.9
    for lag in (-4, 0, 3, 5):  # exact Pearson over the overlapping finite pairs
        a, b = (x[: len(x) - lag], y[lag:]) if lag >= 0 else (x[-lag:], y[: len(y) + lag])
        ok = np.isfinite(a) & np.isfinite(b)
        row = lags.set_index("lag").loc[lag]
        assert row["r"] == pytest.approx(stats.pearsonr(a[ok], b[ok])[0], abs=1e-10) and row["n"] == ok.sum()


def test_transforms():
    x = np.array([1.0, np.e, np.e**3, 0.0, 1.0])
    assert np.allclose(W.transform(x, "dlog")[1:3], [1.0, 2.0]) and np.isnan(W.transform(x, "dlog")[3])
    lrm = W.transform(np.full(40, 2.0), "lrm", window=8)
    assert np.isnan(lrm[0]) and np.allclose(lrm[2:], 0.0)
    with pytest.raises(ValueError):
        W.transform(x, "nope")


def test_strided_rolling_quantile_matches_exact_at_refresh_points(monkeypatch):
    x = np.random.default_rng(3).random(5000)
    exact = W.rolling_prev(x, 50, (0.5, 0.9))
    monkeypatch.setattr("analysis.records.warning.EXACT_MAX", 1000)  # stride = ceil(5000 / 250) = 20
    fast = W.rolling_prev(x, 50, (0.5, 0.9))
    assert np.allclose(fast[:, :51], exact[:, :51], equal_nan=True)
    refresh = np.arange(50, 5000, 20)  # recomputed exactly every 20 steps, held in between
    assert np.allclose(fast[:, 51:70], exact[:, 50:51])  # ... and held until the next refresh
    assert np.allclose(fast[:, refresh], exact[:, refresh])


def test_strided_rolling_quantile_takes_a_nan_prefix(monkeypatch):
    """A smoothed signal starts with NaN: the long-series path rolls over the rest (exact pandas would
    take over for any NaN at all), and its first values equal the exact ones."""
    x = np.random.default_rng(4).random(5000)
    x[:7] = np.nan
    exact = W.rolling_prev(x, 50, 0.5)
    monkeypatch.setattr("analysis.records.warning.EXACT_MAX", 1000)
    fast = W.rolling_prev(x, 50, 0.5)
    assert np.isnan(fast[: 7 + 12]).all() and np.isnan(exact[: 7 + 12]).all()  # min_periods = 50 // 4
    assert np.allclose(fast[7 + 12 : 7 + 51], exact[7 + 12 : 7 + 51])
    assert np.allclose(fast[7 + 50 :: 20], exact[7 + 50 :: 20])  # refreshed exactly every 20 steps


def perfect_predictor(n=1000, starts=(200, 500, 800)):
    step = np.arange(1, n + 1)
    x = np.ones(n)  # flat between warnings: the rolling quantile is 1 and nothing else alarms
    for s in starts:
        x[s - 4 : s - 1] = [2.0, 4.0, 8.0]  # steps s-3, s-2, s-1 warn
    spans = np.array([[s, s + 1] for s in starts])
    return step, x, spans


def test_early_warning_perfect_predictor():
    step, x, spans = perfect_predictor()
    frame = W.warning_frame(x, step, spans[:, 0], in_spans(step, spans), horizon=3, window=50, q=0.9)
    assert not frame["t"].isin([200, 201, 500, 501]).any()  # steps inside spikes are left out
    leads = W.lead_times(frame, spans[:, 0], horizon=3)
    res = W.warning_scores(frame, len(spans), leads)
    assert res["auroc"] == 1.0 and res["recall"] == 1.0 and res["precision"] == 1.0
    assert res["median_lead"] == 3 and res["n_detected"] == 3


def test_early_warning_useless_predictor_near_half():
    step, _, spans = perfect_predictor()
    x = 1.0 + np.random.default_rng(5).random(len(step))
    frame = W.warning_frame(x, step, spans[:, 0], in_spans(step, spans), horizon=3)
    res = W.warning_scores(frame, len(spans), W.lead_times(frame, spans[:, 0], 3))
    assert 0.2 < res["auroc"] < 0.8


def synthetic_run(name, seed, n=600, starts=(150, 300, 450)):
    """Loss with spikes at `starts`; adam_v_max jumps 2 steps before each; grad_norm is noise."""
    rng = np.random.default_rng(seed)
    step = np.arange(1, n + 1)
    loss = 3.0 + 3.0 * np.exp(-step / 100) + 0.01 * rng.standard_normal(n)
    v = np.exp(0.1 * rng.standard_normal(n))
    for s in starts:
        loss[s - 1 : s + 1] *= 1.5
        v[s - 3] *= 30
    steps = pd.DataFrame({"step": step, "loss": loss, "adam_v_max": v, "grad_norm": 1 + rng.random(n)})
    layers = pd.DataFrame({"step": step, "group": "h.0.attn", "stat": "adam_v_max", "value": v})
    empty = pd.DataFrame()
    return Run(name, None, {}, "baseline", 8, 1e-3, seed, steps, layers, empty, empty, empty)


def test_analyze_runs_ranks_the_leading_signal():
    runs = [synthetic_run("a", 0), synthetic_run("b", 1)]
    res = R.analyze_runs(runs, n_boot=100, max_lag=4, horizon=2)
    assert set(res["correlations"]["run"]) == {"a", "b", "pooled"}
    rank = R.ranking(res)
    top = rank[rank["signal"] == "adam_v_max"].set_index("transform")
    assert top.loc["raw", "best_lag"] == 2 and top.loc["raw", "r_at_best_lag"] > 0.5
    # Of the two positives before each spike (horizon 2) one carries the jump: AUROC about 0.75.
    assert top.loc["raw", "recall"] == 1.0 and top.loc["raw", "auroc"] > 0.7
    assert "adam_v_max[h.0.attn]" in set(rank["signal"])
    ew = res["early_warning"].set_index(["run", "signal"])
    assert ew.loc[("pooled", "adam_v_max"), "n_events"] == 6
    single = R.analyze_runs(runs[:1], n_boot=50, groups=False)
    assert set(single["correlations"]["run"]) == {"a", "pooled"}
