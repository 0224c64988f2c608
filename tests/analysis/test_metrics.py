"""Instability metrics on constructed loss series with known answers, and loading run directories."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.records.load import NotARunDirError, Run, concat, load_run, load_runs, method_of
from analysis.records.metrics import instability, probe_series, run_metrics, spike_table
from analysis.records.signals import NOISE_SPAN, run_signals, smoothed_noise_scale
from gradvar.records import RecordWriter


def smooth(n=300):
    step = np.arange(1, n + 1)
    return step, 3.0 + 5.0 * np.exp(-step / 60.0)


def planted():
    """Spikes at steps 100-102 (x1.6) and 200 (x1.5) on a smooth decaying loss."""
    step, loss = smooth()
    loss[99:102] *= 1.6
    loss[199] *= 1.5
    return step, loss


def test_planted_spikes_found_at_their_steps():
    step, loss = planted()
    t = spike_table(loss, step)
    for det in ("ratio", "any"):
        ev = t[t["detector"] == det]
        assert list(ev["start_step"]) == [100, 200]
        assert list(ev["end_step"]) == [102, 200]
    ev = t[t["detector"] == "any"].set_index("start_step")
    # The loss is back below 1.05 x the pre-spike minimum on the step after each event.
    assert ev.loc[100, "time_to_recover"] == 3 and ev.loc[200, "time_to_recover"] == 1
    assert ev.loc[100, "peak_ratio"] == pytest.approx(loss[99] / loss[98], rel=1e-12)


def test_counts_are_events_not_steps():
    step, loss = planted()
    m = instability(loss, step)
    assert m["spike_events"] == 2 and m["ratio_spike_events"] == 2 and m["spike_steps"] == 4
    assert m["spike_events_per_1k_steps"] == pytest.approx(2 * 1000 / 300)
    assert m["max_loss_ratio"] == pytest.approx(np.max(loss[1:] / np.minimum.accumulate(loss)[:-1]))
    assert m["run_class"] == "spiky" and m["unrecovered_events"] == 0


def test_smooth_run_is_stable():
    step, loss = smooth()
    m = instability(loss, step)
    assert m["spike_events"] == 0 and m["run_class"] == "stable"
    assert np.isnan(m["median_time_to_recover"])


def test_divergence_nan_and_no_recovery():
    step, loss = smooth()
    bad = loss.copy()
    bad[250] = np.nan
    m = instability(bad, step)
    assert m["run_class"] == "diverged" and m["nonfinite_points"] == 1 and m["max_loss_ratio"] == np.inf
    up = loss.copy()
    up[200:] *= 2.0  # never comes back
    m = instability(up, step)
    assert m["run_class"] == "diverged" and m["unrecovered_events"] == 1


def test_empty_series():
    m = instability([], [], prefix="probe_")
    assert m["probe_n_points"] == 0 and m["probe_run_class"] == "no data"


def _run(steps, probes=None):
    empty = pd.DataFrame()
    return Run(
        "r", None, {}, "baseline", 8, 1e-3, 0, steps, empty, probes if probes is not None else empty, empty, empty
    )


def test_probe_series_skips_missing_and_falls_back_to_probes_table():
    step, loss = smooth(50)
    probe = np.where(step % 10 == 0, loss, np.nan)
    probe[19] = np.inf  # a non-finite probe is kept (it is a spike), a NaN is "no probe"
    st, pl = probe_series(_run(pd.DataFrame({"step": step, "loss": loss, "probe_loss": probe})))
    assert list(st) == [10, 20, 30, 40, 50] and np.isinf(pl[1])
    probes = pd.DataFrame({"step": [10, 10, 20, 20], "probe_seqlen": [32, 64, 32, 64], "loss": [9.0, 5.0, 8.0, 4.0]})
    st, pl = probe_series(_run(pd.DataFrame({"step": step, "loss": loss}), probes))
    assert list(st) == [10, 20] and list(pl) == [5.0, 4.0]


def write_run(root, name, method=None, slw=False, n=60):
    d = root / name
    w = RecordWriter(d)
    for s in range(1, n + 1):
        w.append(
            "steps",
            {
                "step": s,
                "tokens": s * 64,
                "seqlen": 8,
                "batch_size": 8,
                "lr": 1e-3 * s / n,
                "loss": 5.0 - s / n,
                "probe_loss": 5.0 if s % 10 == 0 else np.nan,
            },
        )
    w.append(
        "evals", {"step": n, "tokens": n * 64, "seqlen": 8, "val_loss": 4.0, "val_ppl": np.exp(4.0), "time_s": 1.0}
    )
    w.close()
    meta = {"machine": "test"} | ({"method": method} if method else {})
    (d / "config.json").write_text(
        json.dumps(
            {"name": name, "seed": 3, "optim": {"lr": 1e-3, "batch_size": 8}, "slw": {"enabled": slw}, "meta": meta}
        )
    )
    return d


def test_load_run_joins_metadata(tmp_path):
    run = load_run(write_run(tmp_path, "a", slw=True))
    assert run.method == "slw" and run.seed == 3 and run.lr == 1e-3 and run.batch_size == 8
    assert len(run.steps) == 60 and len(run.evals) == 1 and len(run.layers) == 0
    # steps.lr is the recorded schedule; peak_lr is the configured value everywhere.
    assert run.steps["lr"].iloc[0] == pytest.approx(1e-3 / 60) and (run.steps["peak_lr"] == 1e-3).all()
    assert (run.evals["lr"] == 1e-3).all() and (run.steps["run"] == "a").all()
    m = run_metrics(run)
    assert m["probe_n_points"] == 6 and m["n_steps"] == 60 and m["method"] == "slw"


def test_load_runs_unique_names_and_concat(tmp_path):
    a = write_run(tmp_path / "x", "same", method="baseline")
    b = write_run(tmp_path / "y", "same", method="custom")
    runs = load_runs([a, b])
    assert len({r.name for r in runs}) == 2 and runs[1].method == "custom"
    both = concat(runs, "steps")
    assert len(both) == 120 and set(both["run"]) == {r.name for r in runs}
    assert concat(runs, "probes").empty


def test_not_a_run_dir(tmp_path):
    with pytest.raises(NotARunDirError):
        load_run(tmp_path)
    with pytest.raises(NotARunDirError):
        load_runs([tmp_path / "missing"])
    assert method_of({}) == "baseline" and method_of({"slw": {"enabled": True}}) == "slw"


def naive_ema_ratio(trace, true_sq, span):
    """Direct reference: at each step, the alpha-weighted means (pandas' adjusted EMA) of the estimates so far."""
    a = 2.0 / (span + 1)
    ok = np.isfinite(trace) & np.isfinite(true_sq)
    out = np.full(len(trace), np.nan)
    for t in np.flatnonzero(ok):
        idx = np.flatnonzero(ok[: t + 1])
        if len(idx) < span // 4:
            continue
        w = (1 - a) ** np.arange(len(idx) - 1, -1, -1)
        mg = (w * true_sq[idx]).sum() / w.sum()
        out[t] = (w * trace[idx]).sum() / w.sum() / mg if mg > 0 else np.nan
    return out


def test_smoothed_noise_scale_divides_averages_not_noisy_ratios():
    """tr(Sigma) = 100 and |G|^2 = 1 on average, each estimate noisy (|G|^2 often negative), K=1 steps NaN."""
    rng = np.random.default_rng(0)
    n = 400
    trace = 100 + 20 * rng.standard_normal(n)
    true_sq = 1 + 2 * rng.standard_normal(n)
    trace[::7] = true_sq[::7] = np.nan
    got = smoothed_noise_scale(trace, true_sq)
    np.testing.assert_allclose(got, naive_ema_ratio(trace, true_sq, NOISE_SPAN), rtol=1e-9, equal_nan=True)
    late = got[100:][np.isfinite(got[100:])]
    per_step = (trace / true_sq)[100:]
    assert np.median(np.abs(np.log(late / 100))) < 0.35
    assert (per_step < 0).mean() > 0.25 and (late > 0).all()
    assert np.isnan(got[::7]).all()


def test_run_signals_derive_the_smoothed_noise_scale():
    n = 40
    steps = pd.DataFrame(
        {
            "step": np.arange(1, n + 1),
            "grad_trace_sigma": np.full(n, 6.0),
            "grad_true_sq": np.full(n, 2.0),
            "grad_noise_scale": np.full(n, 3.0),
        }
    )
    sig = {s.name: s for s in run_signals(_run(steps), groups=False)}
    assert np.nanmax(np.abs(sig["grad_noise_scale_ema"].x - 3.0)) < 1e-12
    assert np.isnan(sig["grad_noise_scale_ema"].x[: NOISE_SPAN // 4 - 1]).all()
    no_variance = steps.drop(columns=["grad_trace_sigma", "grad_true_sq"])
    assert "grad_noise_scale_ema" not in {s.name for s in run_signals(_run(no_variance), groups=False)}
