"""One early-warning rule: the study's ranking (records, positions = steps) and the diagnosis of a log
(positions = entries) give the same numbers on the same series."""

import numpy as np
import pandas as pd
import pytest
from test_correlate import synthetic_run

from analysis.diagnosis.signals import signal_variants
from analysis.records.ranking import analyze_runs
from analysis.records.signals import in_spans, target_of
from analysis.records.warning import early_warning


@pytest.mark.parametrize("horizon", [2, 5])
def test_study_and_diagnosis_score_a_series_alike(horizon):
    run = synthetic_run("a", 0)
    study = analyze_runs([run], groups=False, transforms=("raw",), n_boot=20, horizon=horizon)["early_warning"]
    step, _, spans = target_of(run)
    entries = pd.DataFrame({"event": in_spans(step, spans).astype(int)})
    spikes = pd.DataFrame({"start_step": spans[:, 0], "peak_step": spans[:, 0]})
    diag = signal_variants(run.steps[["step", "adam_v_max", "grad_norm"]], entries, spikes, horizon)
    pairs = [("auroc", "auroc"), ("precision", "precision"), ("recall", "hit_rate"), ("n_eval", "n_obs")]
    pairs += [("median_lead", "median_lead_entries"), ("median_lead", "median_lead_steps")]
    for signal in ("adam_v_max", "grad_norm"):
        s = study[(study["run"] == "a") & (study["signal"] == signal)].iloc[0]
        d = diag[(diag["signal"] == signal) & (diag["variant"] == "raw")].iloc[0]
        assert s["n_events"] == d["n_events"] == len(spans) >= 3
        for a, b in pairs:
            assert s[a] == pytest.approx(d[b], nan_ok=True), (signal, a, b)
    # adam_v_max jumps 2 steps before each spike: every event warned; 1 of the `horizon` positives carries it
    leading = study[study["signal"] == "adam_v_max"].iloc[0]
    assert leading["recall"] == 1.0 and leading["median_lead"] == 2 and leading["auroc"] > 0.55


def test_lead_is_the_first_alarm_in_the_horizon_and_quantile_needs_a_quarter_window():
    x = np.ones(100)
    x[[80, 81, 84]] = 5.0  # two alarm runs before the event at 85: the lead counts from the first, 80
    frame, leads, scores = early_warning(x, np.arange(100), [85], horizon=6, window=40)
    assert leads == [5] and scores["recall"] == 1.0
    assert frame["t"].min() == 10  # the quantile needs window // 4 = 10 earlier values
    assert scores["precision"] == pytest.approx(1.0)  # every alarm lies within 6 steps before the event
