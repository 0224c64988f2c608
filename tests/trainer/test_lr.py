"""Token-based LR schedule: linear warmup over steps, cosine decay over tokens to min_lr, training ends at
the token budget (as the paper and Megatron-DeepSpeed do under SLW)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.config import slw_schedule
from trainer.lr import lr_at

LR, MIN_LR, WARMUP, BUDGET = 6e-4, 6e-5, 10, 1_000_000


def cosine(tokens):
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * min(tokens / BUDGET, 1.0)))


def test_warmup_is_linear_over_steps():
    values = [lr_at(s, 0, LR, MIN_LR, WARMUP, BUDGET) for s in range(1, WARMUP + 1)]
    assert values == pytest.approx([LR * s / WARMUP for s in range(1, WARMUP + 1)], rel=1e-12)
    assert np.allclose(np.diff(values), LR / WARMUP)


def test_warmup_scales_the_decayed_value():
    """Tokens keep counting during warmup (SLW steps are short): warmup multiplies the cosine value."""
    assert lr_at(5, 300_000, LR, MIN_LR, WARMUP, BUDGET) == pytest.approx(cosine(300_000) * 5 / WARMUP)


@pytest.mark.parametrize("tokens", [0, 1, 250_000, 500_000, 999_999])
def test_cosine_over_tokens_not_steps(tokens):
    after = [lr_at(s, tokens, LR, MIN_LR, WARMUP, BUDGET) for s in (WARMUP + 1, 100, 10_000)]
    assert after == pytest.approx([cosine(tokens)] * 3, rel=1e-12)  # the step number no longer matters


def test_cosine_landmarks():
    f = lambda t: lr_at(WARMUP + 1, t, LR, MIN_LR, WARMUP, BUDGET)  # noqa: E731
    assert f(0) == pytest.approx(LR)
    assert f(BUDGET // 2) == pytest.approx((LR + MIN_LR) / 2)
    assert f(BUDGET) == pytest.approx(MIN_LR)
    assert f(5 * BUDGET) == pytest.approx(MIN_LR)  # clamped past the budget
    ts = np.linspace(0, BUDGET, 101)
    assert np.all(np.diff([f(int(t)) for t in ts]) <= 0)


def test_no_warmup():
    assert lr_at(1, 0, LR, MIN_LR, 0, BUDGET) == pytest.approx(LR)


def test_trainer_follows_the_schedule_and_ends_at_the_budget(smoke, tmp_path):
    """Under SLW, steps carry batch x seqlen_t tokens: the recorded LR is lr_at(step, tokens before it) and
    training stops on the first step that reaches the token budget."""
    budget = 4 * 128 * 6  # 6 full-length steps' worth; the short SLW steps need more steps than 6
    cfg = smoke.cfg(
        tmp_path,
        "lr",
        {
            "slw.enabled": True,
            "slw.min_seqlen": 16,
            "slw.total_steps": 8,
            "slw.difficulty_step": 16,
            "optim.train_tokens": budget,
            "optim.warmup_steps": 3,
            "eval.every": 0,
            "checkpoint.every": 0,
        },
    )
    summary = smoke.train(cfg)
    steps = smoke.steps(cfg.run_dir)
    o = cfg.optim
    before = np.concatenate([[0], steps["tokens"].to_numpy()[:-1]])
    expected = [
        lr_at(int(s), int(t), o.lr, o.min_lr, o.warmup_steps, o.train_tokens) for s, t in zip(steps["step"], before)
    ]
    assert steps["lr"].to_numpy() == pytest.approx(expected, rel=1e-9)
    assert steps["tokens"].iloc[-1] >= budget > steps["tokens"].iloc[-2]
    assert summary["tokens"] == steps["tokens"].iloc[-1] and summary["steps"] == len(steps) > 6
    sched = slw_schedule(cfg)
    assert list(steps["seqlen"]) == [sched.seqlen(int(s)) for s in steps["step"]]
