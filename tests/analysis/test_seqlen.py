"""Variance by sequence length: windows, tables and the stated hypothesis on constructed probes."""

import json

import numpy as np
import pandas as pd

from analysis.records.load import load_run
from analysis.records.seqlen import (
    probe_variance_by_length,
    seqlen_hypothesis,
    state_seqlen_finding,
    step_variance_by_seqlen,
    training_window,
    warmup_by_run,
)

LADDER = (64, 128, 256, 512)


def probes(run="r", n_steps=400, every=10, early_up=True, seed=0, flip_at=None):
    """Up to flip_at (default: the first quarter) variance grows with length; after it, it shrinks."""
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(every, n_steps + 1, every):
        for L in LADDER:
            grows = step <= (n_steps / 4 if flip_at is None else flip_at)
            base = L if (grows == early_up) else 1e4 / L
            rows.append(
                {
                    "run": run,
                    "step": step,
                    "probe_seqlen": L,
                    "grad_sq_max": base * (1 + 0.05 * rng.random()),
                    "grad_trace_sigma": 1.0 / L,
                    "grad_trace_sigma_per_token": 1.0 * L / L,
                }
            )
    return pd.DataFrame(rows)


def test_training_window():
    w = training_window([1, 25, 26, 75, 76, 100], 100)
    assert list(w) == ["early", "early", "middle", "middle", "late", "late"]
    w = training_window([1, 60, 61, 75, 76, 100], 100, early_until=60)
    assert list(w) == ["early", "early", "middle", "middle", "late", "late"]
    w = training_window([1, 25, 26, 90], 100, early_until=[np.nan, np.nan, 30, 95])  # NaN: the fraction rule
    assert list(w) == ["early", "early", "early", "early"]


def test_early_window_follows_the_warmup_and_falls_back_without_it(tmp_path):
    """Variance grows with length up to step 30 and shrinks after: 3 x warmup 10 sees the growth; the first
    quarter (steps <= 100) mixes in the reversal."""
    df = probes(flip_at=30)
    by_warmup = seqlen_hypothesis(df, warmup_steps={"r": 10}).set_index("window")
    assert by_warmup.loc["early", "verdict"] == "longer → larger: hypothesis supported"
    assert by_warmup.loc["early", "n_probe_steps"] == 3 and by_warmup.loc["early", "early_rule"] == (
        "steps <= 3 x warmup = 30"
    )
    fallback = seqlen_hypothesis(df).set_index("window")
    assert fallback.loc["early", "n_probe_steps"] == 10 and fallback.loc["early", "spearman_rho"] < 0
    assert fallback.loc["early", "early_rule"] == "first 25% of steps (warmup unknown)"
    assert "warmup unknown" in state_seqlen_finding(seqlen_hypothesis(df))
    t = probe_variance_by_length(df, warmup_steps={"r": 10})
    assert (t[t["window"] == "early"]["n"] == 3).all()
    # the warmup comes from each run's config.json
    for name, optim in (("warm", {"warmup_steps": 10}), ("none", {}), ("zero", {"warmup_steps": 0})):
        (tmp_path / name / "records").mkdir(parents=True)
        (tmp_path / name / "config.json").write_text(json.dumps({"name": name, "optim": optim}))
    runs = [load_run(tmp_path / n) for n in ("warm", "none", "zero")]
    assert warmup_by_run(runs) == {"warm": 10, "none": None, "zero": None}


def test_hypothesis_supported_early_and_reversed_late():
    h = seqlen_hypothesis(probes()).set_index("window")
    assert h.loc["early", "spearman_rho"] > 0.8 and h.loc["early", "p_value"] < 1e-6
    assert h.loc["early", "verdict"] == "longer → larger: hypothesis supported"
    assert h.loc["early", "fold_change"] > 7 and h.loc["early", "frac_steps_longer_larger"] == 1.0
    assert h.loc["late", "spearman_rho"] < -0.8 and h.loc["late", "verdict"] == "longer → smaller"
    text = state_seqlen_finding(seqlen_hypothesis(probes()))
    assert "hypothesis supported" in text and "early window" in text and "late window" in text


def test_hypothesis_contradicted_is_said_plainly():
    h = seqlen_hypothesis(probes(early_up=False)).set_index("window")
    assert h.loc["early", "verdict"] == "longer → smaller: hypothesis contradicted"


def test_pooled_over_runs_and_no_data():
    both = pd.concat([probes("a", seed=1), probes("b", seed=2)], ignore_index=True)
    h = seqlen_hypothesis(both)
    assert set(h["run"]) == {"a", "b", "pooled"}
    pooled = h[(h["run"] == "pooled") & (h["window"] == "early")].iloc[0]
    assert pooled["n_probe_steps"] == 20  # (run, step) pairs stay distinct
    assert seqlen_hypothesis(pd.DataFrame()).empty
    assert "not tested" in state_seqlen_finding(seqlen_hypothesis(pd.DataFrame()))


def test_probe_table_medians():
    t = probe_variance_by_length(probes())
    assert set(t["window"]) == {"early", "middle", "late", "all"}
    early = t[t["window"] == "early"].set_index("probe_seqlen")["grad_sq_max"]
    assert early.is_monotonic_increasing and list(early.index) == list(LADDER)
    assert (t[t["window"] == "all"]["n"] == 40).all()


def test_step_tags_grouped_by_seqlen():
    steps = pd.DataFrame(
        {
            "step": np.arange(1, 101),
            "seqlen": np.repeat([8, 16, 32, 64], 25),
            "grad_trace_sigma": np.repeat([1.0, 2.0, 3.0, 4.0], 25),
        }
    )
    t = step_variance_by_seqlen(steps)
    allw = t[t["window"] == "all"].set_index("seqlen")
    assert list(allw["grad_trace_sigma"]) == [1.0, 2.0, 3.0, 4.0] and (allw["n"] == 25).all()
    assert list(t[t["window"] == "early"]["seqlen"]) == [8]


def test_old_records_with_the_applied_adam_column_load_and_are_ignored():
    old = probes().rename(columns={"grad_sq_max": "adam_v_max_if_applied"})
    t = probe_variance_by_length(old)
    assert "adam_v_max_if_applied" not in t.columns and "grad_trace_sigma" in t.columns
    assert seqlen_hypothesis(old).empty  # the headline statistic is absent: not tested, never the old column
    assert not seqlen_hypothesis(old, "grad_trace_sigma").empty
