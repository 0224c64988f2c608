"""What moved first, on constructed series: the departure rule against a naive reference, a lead of known size
and step, a simultaneous rise (not a lead), noise alone (nothing named), the group origin and its spread, the
LR warmup ramp, sparse series, the held-out batch test and the Adam moment split."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.diagnosis.attribution import NO_LEAD, attribution_lines
from analysis.records.attribution import attribute_run
from analysis.records.departure import MIN_HISTORY, MIN_RISE, WINDOW, K, departs, first_departure

N, SPIKE = 80, 60


def _steps(rng, n_signals=6, noise=0.05, loss_jump=1.0):
    """A steps table: a flat noisy loss with a jump at SPIKE (lasting 3 steps), and lognormal noise signals."""
    step = np.arange(1, N + 1)
    loss = 3.0 + 0.02 * rng.standard_normal(N)
    loss[SPIKE - 1 : SPIKE + 2] += loss_jump
    df = pd.DataFrame({"step": step, "loss": loss, "lr": np.full(N, 1e-3)})
    for k in range(n_signals):
        df[f"sig{k}"] = np.exp(noise * rng.standard_normal(N))
    return df


def _spikes(start=SPIKE, end=SPIKE + 2, peak=SPIKE):
    return pd.DataFrame([{"event": 1, "start_step": start, "end_step": end, "peak_step": peak, "rise": 1.0}])


def _one(steps, layers=None, probes=None, spikes=None):
    atts, _ = attribute_run(steps, _spikes() if spikes is None else spikes, layers, probes)
    assert len(atts) == 1
    return atts[0]


def _naive_departs(y, i):
    prev = y[max(0, i - WINDOW) : i]
    if len(prev) < MIN_HISTORY:
        return False
    slopes = [(prev[b] - prev[a]) / (b - a) for a in range(len(prev)) for b in range(a + 1, len(prev))]
    carried = [v + np.median(slopes) * (len(prev) - j) for j, v in enumerate(prev)]
    spread = max(1.4826 * np.median(np.abs(carried - np.median(carried))), 0.01)
    med = np.median(carried[-5:])
    return (y[i] - med) / spread > K and y[i] - med >= MIN_RISE


def test_departure_rule_matches_naive_reference():
    rng = np.random.default_rng(0)
    y = np.cumsum(0.05 * rng.standard_normal(130))
    y[[40, 80, 81, 120]] += [0.5, 1.0, 0.1, 3.0]
    got = [departs(y, i)[0] for i in range(len(y))]
    want = [_naive_departs(y, i) for i in range(len(y))]
    assert got == want
    assert got[40] and got[80] and got[120] and not got[5]


def test_lead_of_known_size_and_step():
    rng = np.random.default_rng(1)
    df = _steps(rng)
    df.loc[df["step"] >= SPIKE - 5, "sig2"] *= 3.0  # x3 from five steps before the loss, and it stays up
    att = _one(df)
    assert att.verdict == "led"
    lead = att.leaders
    assert list(lead["name"]) == ["sig2"]
    row = lead.iloc[0]
    assert row["step"] == SPIKE - 5 and row["lead"] == 5
    assert row["factor"] == pytest.approx(3.0, rel=0.15)
    assert "moved first: sig2 at step 55, 5 steps before (x" in attribution_lines(att)[0]


def test_simultaneous_rise_is_not_a_lead():
    rng = np.random.default_rng(2)
    df = _steps(rng)
    df.loc[df["step"] >= SPIKE, "sig1"] *= 5.0
    att = _one(df)
    assert att.verdict == "none" and not len(att.leaders)
    assert list(att.with_loss["name"]) == ["sig1"] and att.with_loss.iloc[0]["lead"] == 0
    assert NO_LEAD in attribution_lines(att)[0]


@pytest.mark.parametrize("seed", range(10))
def test_noise_alone_names_nothing(seed):
    rng = np.random.default_rng(100 + seed)
    df = _steps(rng, n_signals=40, noise=0.1)
    att = _one(df)
    assert att.verdict == "none", att.leaders
    assert att.n_judged == att.n_series  # every series had the history to be judged: the rule could have fired


def test_blip_back_down_before_the_loss_does_not_lead():
    rng = np.random.default_rng(3)
    df = _steps(rng)
    df.loc[df["step"] == SPIKE - 6, "sig0"] *= 4.0  # one step up, back at its level five steps before the loss
    att = _one(df)
    assert not len(att.leaders)


def test_a_series_still_up_from_the_previous_event_does_not_lead_the_next():
    rng = np.random.default_rng(4)
    df = _steps(rng)
    df.loc[df["step"] >= 52, "sig0"] *= 4.0  # rose with an event at 52 and never came back
    two = pd.DataFrame(
        [
            {"event": 1, "start_step": 52, "end_step": 54, "peak_step": 52, "rise": 1.0},
            {"event": 2, "start_step": SPIKE, "end_step": SPIKE + 2, "peak_step": SPIKE, "rise": 1.0},
        ]
    )
    df.loc[df["step"].between(52, 54), "loss"] += 1.0
    atts, _ = attribute_run(df, two)
    assert atts[1].first_searched == 55
    assert "sig0" not in set(atts[1].moved["name"])


def _layers(rng, rises: dict):
    """A layers table: groups a, b, c with grad_norm noise; rises = {group: first step of a x4 rise}."""
    rows = []
    for g in ("a", "b", "c"):
        v = np.exp(0.05 * rng.standard_normal(N))
        if g in rises:
            v[np.arange(1, N + 1) >= rises[g]] *= 4.0
        rows.append(pd.DataFrame({"step": np.arange(1, N + 1), "group": g, "stat": "grad_norm", "value": v}))
    return pd.concat(rows, ignore_index=True)


def test_origin_group_and_its_spread():
    rng = np.random.default_rng(5)
    att = _one(_steps(rng), layers=_layers(rng, {"a": SPIKE - 4, "b": SPIKE - 2, "c": SPIKE}))
    assert att.origin == "a"
    assert att.spread == [("b", SPIKE - 2), ("c", SPIKE)]
    assert any("It started in group a; then b (step 58), c (step 60)" in ln for ln in attribution_lines(att))


def test_groups_rising_together_name_no_origin():
    rng = np.random.default_rng(6)
    att = _one(_steps(rng), layers=_layers(rng, {"a": SPIKE - 3, "b": SPIKE - 3}))
    assert att.origin is None and att.first_groups == ["a", "b"]


def test_lr_warmup_ramp_and_the_update_it_drives_are_not_rises():
    rng = np.random.default_rng(7)
    df = _steps(rng, n_signals=2)
    df["lr"] = 1e-3 * np.minimum(df["step"] / 70, 1.0)  # linear warmup to step 70, through the spike
    df["update_rms"] = 30 * df["lr"] * np.exp(0.05 * rng.standard_normal(N))  # the update follows the LR
    att = _one(df)
    assert att.verdict == "none"
    assert att.lr["phase"] == "warmup"
    assert any("LR warmup" in ln for ln in attribution_lines(att))


def test_a_jump_of_the_lr_is_named_as_the_schedule():
    rng = np.random.default_rng(8)
    df = _steps(rng, n_signals=2)
    df.loc[df["step"] >= SPIKE - 2, "lr"] *= 10
    att = _one(df)
    assert list(att.leaders["name"]) == ["lr"]
    assert any("The LR schedule itself moved first" in ln for ln in attribution_lines(att))


def test_update_per_unit_lr_shows_a_group_whose_lr_was_scaled_behind_the_schedule():
    rng = np.random.default_rng(9)
    df = _steps(rng, n_signals=2)
    lay = _layers(rng, {})
    upd = lay[lay["group"] == "a"].assign(stat="update_rms", value=lambda d: 0.01 * d["value"])
    upd.loc[upd["step"] == SPIKE - 1, "value"] *= 100  # one step, x100, with the recorded LR unchanged
    att = _one(df, layers=pd.concat([lay, upd], ignore_index=True))
    assert att.leaders.iloc[0]["name"] == "update_rms/lr[a]" and att.origin == "a"


def test_sparse_series_departure_is_dated_between_records():
    rng = np.random.default_rng(10)
    df = _steps(rng, n_signals=1)
    probes = pd.DataFrame({"step": np.arange(2, N + 1, 4), "probe_seqlen": 64})
    probes["loss"] = 3.0 * np.exp(0.01 * rng.standard_normal(len(probes)))
    probes.loc[probes["step"] >= SPIKE - 7, "loss"] *= 2.0  # recorded at 54 (after its update: counts at 55)
    att = _one(df, probes=probes)
    row = att.leaders.iloc[0]
    assert row["name"] == "probe_loss[len 64]" and bool(row["sparse"])
    assert (row["prev_step"], row["step"], row["lead"]) == (51, 55, 5)
    assert "between steps 52 and 55" in attribution_lines(att)[0]


def test_held_out_loss_at_its_level_blames_the_batch():
    rng = np.random.default_rng(11)
    df = _steps(rng, n_signals=2)
    df["probe_loss"] = 3.1 + 0.01 * rng.standard_normal(N)  # the parameters stay fine throughout
    att = _one(df)
    assert att.verdict == "batch" and att.held_out["at_level"] and att.held_out["step"] == SPIKE - 1
    assert "the batch of step 60 was the cause" in attribution_lines(att)[0]
    df.loc[df["step"] >= SPIKE - 1, "probe_loss"] += 1.0  # the model itself went bad after step 59
    att = _one(df)
    assert att.verdict == "none" and "probe_loss" in set(att.with_loss["name"])


def test_adam_moment_split():
    rng = np.random.default_rng(12)
    df = _steps(rng, n_signals=1)
    df["adam_m_norm"] = np.exp(0.03 * rng.standard_normal(N))
    df["adam_vhat_l1"] = np.exp(0.03 * rng.standard_normal(N))
    df.loc[df["step"] >= SPIKE - 3, "adam_m_norm"] *= 2.0
    att = _one(df)
    m = att.moments
    assert m["first"]["step"] == SPIKE - 3 and m["first"]["factor"] == pytest.approx(2.0, rel=0.1)
    assert m["second"]["step"] is None and abs(math.log(m["second"]["factor"])) < 0.15
    assert any(
        "first moment adam_m_norm rose x2" in ln and "adam_vhat_l1 stayed at its level" in ln
        for ln in attribution_lines(att)
    )


def test_first_departure_needs_history():
    y = np.log(np.r_[np.ones(5), 10.0])
    dep, judged = first_departure(np.arange(1, 7), y, 1, 6, 6)
    assert dep is None and not judged


def test_batched_levels_equal_one_at_a_time():
    from analysis.records.departure import level_before, levels

    y = np.cumsum(np.random.default_rng(13).standard_normal(120))
    idx = np.arange(0, 120, 7)
    lev, spr, n = levels(y, idx)
    for k, i in enumerate(idx):
        one = level_before(y, int(i))
        assert n[k] == one.n
        if one.n:
            assert lev[k] == pytest.approx(one.level) and spr[k] == pytest.approx(one.spread)
