"""Variance-aware pacing on constructed signals."""

import math

from gradvar.slw import SLWSchedule
from trainer.pacing import VariancePacer, decide


def test_decide_thresholds():
    assert decide(0.1, 0.5, 0.4) == "advance"
    assert decide(0.7, 0.5, 0.4) == "hold"
    assert decide(1.0, 0.5, 0.4) == "back"
    assert decide(math.inf, 0.5, 0.4) == "back"


def test_pacer_holds_and_steps_back_on_variance_bursts():
    sched = SLWSchedule("fixed_linear", 8, 512, 40, 8)
    pacer = VariancePacer(sched, calib_steps=5, window=5, margin=math.log(1.5), back_steps=2)
    v = 1e-4
    actions = []
    for step in range(1, 30):
        v *= 1.02  # smooth growth: advance
        if step in (12, 13):
            v *= 1.3  # a moderate burst: hold
        if step == 20:
            v *= 10  # an extreme one: step back
        actions.append(pacer.observe(v))
    assert actions[:5] == ["advance"] * 5
    assert "hold" in actions[10:14]
    assert actions[19] == "back"
    assert pacer.seqlen(30) < sched.seqlen(30)


def test_pacer_state_roundtrip():
    sched = SLWSchedule("fixed_linear", 8, 512, 40, 8)
    a = VariancePacer(sched, calib_steps=3)
    for i in range(6):
        a.observe(1e-3 * (1 + i))
    b = VariancePacer(sched, calib_steps=3)
    b.load_state_dict(a.state_dict())
    assert [a.observe(0.01 * i) for i in range(1, 5)] == [b.observe(0.01 * i) for i in range(1, 5)]
