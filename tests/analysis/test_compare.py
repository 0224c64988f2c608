"""Baseline vs SLW comparisons on in-memory runs with known answers."""

import numpy as np
import pandas as pd
import pytest

from analysis.records.compare import compare, default_target, reach, stability_grid, val_summary
from analysis.records.load import Run


def make_run(
    name, method, seed, lr=1e-3, batch=8, spikes=(), val=(6.0, 5.0, 4.5), tokens_per_step=100, nan_at=None, n=300
):
    step = np.arange(1, n + 1)
    loss = 3.0 + 3.0 * np.exp(-step / 80)
    for s in spikes:
        loss[s - 1] *= 1.5
    if nan_at:
        loss[nan_at:] = np.nan
    probe = np.where(step % 5 == 0, loss + 0.1, np.nan)
    steps = pd.DataFrame(
        {"step": step, "tokens": step * tokens_per_step, "loss": loss, "probe_loss": probe, "time_s": np.full(n, 0.5)}
    )  # each step's duration, as the monitor records it
    ev_steps = np.array([100, 200, 300])
    evals = pd.DataFrame(
        {
            "step": ev_steps,
            "tokens": ev_steps * tokens_per_step,
            "val_loss": list(val),
            "val_ppl": np.exp(val),
            "time_s": ev_steps * 0.5,
        }
    )
    empty = pd.DataFrame()
    return Run(name, None, {}, method, batch, lr, seed, steps, empty, empty, empty, evals)


def study():
    return [
        make_run("b0", "baseline", 0, spikes=(100, 150)),
        make_run("b1", "baseline", 1, spikes=(120,)),
        make_run("s0", "slw", 0, tokens_per_step=60, val=(5.5, 4.6, 4.4)),
        make_run("s1", "slw", 1, tokens_per_step=60, val=(5.5, 4.5, 4.3)),
    ]


def test_val_summary_and_reach():
    r = make_run("b0", "baseline", 0)
    assert val_summary(r) == pytest.approx({"final_val_loss": 4.5, "final_val_ppl": np.exp(4.5), "best_val_loss": 4.5})
    assert reach(r, 5.0) == {"step_to_target": 200.0, "tokens_to_target": 20000.0, "time_to_target_s": 100.0}
    assert np.isnan(reach(r, 1.0)["tokens_to_target"])
    r.evals = r.evals.drop(columns="time_s")  # without elapsed time: the summed step durations
    assert reach(r, 5.0)["time_to_target_s"] == 100.0


def test_default_target_is_worst_of_methods_best():
    # baseline bests 4.5, 4.5 -> 4.5; slw bests 4.4, 4.3 -> every slw run reaches 4.4; target = max = 4.5.
    assert default_target(study()) == 4.5


def test_compare_tables():
    res = compare(study())
    per = res["per_run"].set_index("run")
    assert list(per.loc[["b0", "b1", "s0", "s1"], "probe_spike_events"]) == [2, 1, 0, 0]
    assert (per["class_source"] == "probe").all() and (per["wall_time_s"] == 150.0).all()
    # Target 4.5: s0 reaches it at step 300 (4.4), s1 at step 200, both baselines at step 300.
    assert per.loc["s0", "tokens_to_target"] == 300 * 60 and per.loc["s1", "tokens_to_target"] == 200 * 60
    assert per.loc["b0", "tokens_to_target"] == 300 * 100
    t = res["target"].set_index("method")
    assert t.loc["slw", "tokens_to_target_ratio"] == pytest.approx(15000 / 30000)
    assert t.loc["slw", "time_to_target_s_ratio"] == pytest.approx(125 / 150)
    assert t.loc["slw", "paired_tokens_to_target_ratio"] == pytest.approx(0.5)  # median of 0.6 and 0.4
    s = res["summary"].set_index("method")
    assert s.loc["baseline", "probe_spike_events_median"] == 1.5 and s.loc["baseline", "probe_spike_events_max"] == 2
    g = res["grid"].set_index("method")
    assert g.loc["baseline", "class"] == "spiky" and g.loc["slw", "class"] == "stable"
    assert g.loc["baseline", "n_spiky"] == 2 and g.loc["slw", "n_stable"] == 2


def test_grid_over_batch_and_lr_with_divergence():
    runs = [
        make_run("a", "baseline", 0, lr=1e-2, nan_at=200),
        make_run("b", "baseline", 1, lr=1e-2),
        make_run("c", "baseline", 0, lr=1e-3, batch=16, spikes=(50,)),
    ]
    grid = stability_grid(compare(runs)["per_run"]).set_index(["batch_size", "lr"])
    # One diverged and one stable seed: a tie goes to the less stable class.
    assert grid.loc[(8, 1e-2), "class"] == "diverged" and grid.loc[(8, 1e-2), "n_diverged"] == 1
    assert grid.loc[(16, 1e-3), "class"] == "spiky"
