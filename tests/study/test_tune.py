"""tune-slw's rule on constructed evaluation curves, and one real short tuning run checked against its trials'
own validation records."""

import json
import math

import numpy as np
import pytest

import gradvar
from study.tune import choose_t, fluctuation, main


def test_fluctuation_is_largest_relative_ppl_rise():
    assert fluctuation([5.0, 4.0, 3.0]) == 0.0
    assert fluctuation([5.0, 4.0, 4.1, 3.0]) == pytest.approx(math.exp(0.1) - 1)
    assert math.isinf(fluctuation([5.0, np.nan]))


def test_choose_largest_stable_t():
    assert choose_t({5: 0.0, 10: 0.01, 20: 0.2, 40: 0.01}, 0.05) == 40
    assert choose_t({5: 0.3, 10: math.inf}, 0.05) is None


def rise_by_hand(run_dir) -> float:
    """Largest ppl rise between consecutive evaluations, straight from the trial's evals records."""
    val = gradvar.read_records(run_dir, ["evals"])["evals"].sort_values("step").val_loss.to_list()
    if not all(math.isfinite(v) for v in val):
        return math.inf
    return max([0.0] + [math.exp(b - a) - 1 for a, b in zip(val, val[1:])])


@pytest.mark.slow
def test_tune_slw_end_to_end(tmp_path, data_cache, capsys):
    out = tmp_path / "tune"
    argv = [  # `gradvar tune-slw ...`
        "--preset",
        "smoke",
        "-o",
        str(out),
        "--multiples",
        "2",
        "--jobs",
        "2",
        "--data.cache_dir",
        str(data_cache),
        "--optim.warmup_steps",
        "2",
    ]
    rc = main([*argv, "--tol", "0.05"])
    result = json.loads((out / "tune.json").read_text())
    assert result["horizon_steps"] == 30 and len(result["evidence"]) == 1 and result["start"] == 8
    ts = [2, 4, 8, 16, 32, 64]  # 1..32 x the 2-step warmup
    by_hand = {t: rise_by_hand(out / f"start8-T{t}") for t in ts}
    assert {int(t): f for t, f in result["evidence"][0]["fluctuation"].items()} == pytest.approx(by_hand)
    stable = [t for t in ts if by_hand[t] <= 0.05]
    assert result["T"] == (max(stable) if stable else None) and rc == (0 if stable else 1)
    for t in ts:  # each trial ran its own schedule for the 30-step horizon or until the smoke token budget
        steps = gradvar.read_records(out / f"start8-T{t}", ["steps"])["steps"].sort_values("step")
        last = steps.iloc[-1]
        assert last.step == 30 or last.tokens >= 20 * 4 * 128
        assert steps.seqlen.is_monotonic_increasing and (last.seqlen == 128) == (t <= last.step)
    stamps = {p: p.stat().st_mtime for p in out.glob("*/summary.json")}
    capsys.readouterr()

    # the same trials, read again under other tolerances: nothing reruns
    assert main([*argv, "--tol", "1e9"]) == 0
    slw = json.loads((out / "slw.json").read_text())["slw"]
    assert (slw["enabled"], slw["min_seqlen"], slw["total_steps"]) == (True, 8, 64)
    assert "chosen: start length 8, T = 64 steps" in capsys.readouterr().out
    assert main([*argv, "--tol", "-1"]) == 1  # no rise is below -100%
    assert "every T fluctuated" in capsys.readouterr().out and not (out / "slw.json").exists()
    assert {p: p.stat().st_mtime for p in out.glob("*/summary.json")} == stamps
