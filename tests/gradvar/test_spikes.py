"""Loss ratio and spike rules: known answers, and the online detector equals the offline functions."""

import numpy as np
import pytest

from gradvar.spikes import (
    OnlineSpikeDetector,
    SpikeRule,
    classify_run,
    loss_ratio,
    ratio_spikes,
    spike_events,
    z_scores,
    z_spikes,
)


def test_loss_ratio_known_values():
    r = loss_ratio([4.0, 2.0, 3.0, 1.0, np.nan, 1.5])
    assert r[:4].tolist() == [1.0, 0.5, 1.5, 0.5]
    assert np.isinf(r[4]) and r[5] == 1.5


def test_planted_spikes_found_at_their_steps():
    rng = np.random.default_rng(0)
    loss = 5.0 * np.exp(-np.arange(300) / 100) + 1.0 + 0.01 * rng.standard_normal(300)
    loss[[150, 151, 220]] += 1.5
    flags = ratio_spikes(loss) | z_spikes(loss)
    assert spike_events(flags) == [(151, 152), (221, 221)]


def test_min_rise_silences_noise_on_near_zero_losses():
    rng = np.random.default_rng(1)
    loss = np.round(0.006 + 0.002 * rng.random(200), 4)  # fine-tuning loss rounded to 4 decimals
    assert ratio_spikes(loss, SpikeRule(min_rise=0.0)).sum() > 20
    assert ratio_spikes(loss).sum() == 0


def test_nonfinite_is_a_spike_and_divergence():
    loss = [3.0, 2.5, np.inf, 2.0]
    assert ratio_spikes(loss).tolist() == [False, False, True, False]
    assert classify_run([3.0, 2.0, np.nan]) == "diverged"
    assert classify_run(np.linspace(5, 1, 50)) == "stable"
    spiky = np.linspace(5, 1, 50)
    spiky[20] = 6
    assert classify_run(spiky) == "spiky"


def test_online_detector_equals_offline_rules():
    rng = np.random.default_rng(2)
    loss = 3 + 0.05 * rng.standard_normal(400)
    loss[[100, 250]] = [5.0, np.nan]
    rule = SpikeRule(z_window=32)
    det = OnlineSpikeDetector(rule)
    online = [det.update(v) for v in loss]
    z, _ = z_scores(loss, rule.z_window, rule.z_min_history)
    assert [o["spike_ratio"] for o in online] == ratio_spikes(loss, rule).tolist()
    assert [o["spike_z"] for o in online] == z_spikes(loss, rule).tolist()
    ok = np.isfinite(z)
    assert np.allclose(np.array([o["z"] for o in online])[ok], z[ok])
    assert np.allclose([o["loss_ratio"] for o in online], loss_ratio(loss), equal_nan=True)


def test_detector_state_survives_roundtrip():
    loss = list(3 + np.sin(np.arange(60)))
    a = OnlineSpikeDetector()
    for v in loss[:30]:
        a.update(v)
    b = OnlineSpikeDetector()
    b.load_state_dict(a.state_dict())
    assert [a.update(v) for v in loss[30:]] == [b.update(v) for v in loss[30:]]


def test_rule_validation():
    with pytest.raises(ValueError):
        SpikeRule(ratio_threshold=0.9)
