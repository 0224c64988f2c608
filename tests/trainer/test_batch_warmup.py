"""The token-matched control (slw.control batch): full-length sequences, as many tokens per optimizer step
as SLW's at every step, the same LR at every step, read back from both runs' records."""

import numpy as np
import pytest

from gradvar.slw import SLWSchedule, schedule_lengths, token_matched_batch
from trainer.config import ConfigError
from trainer.train import Trainer

SLW = {
    "optim.batch_size": 8,
    "optim.micro_batch_size": 4,
    "optim.train_tokens": 6 * 8 * 128,
    "slw.enabled": True,
    "slw.min_seqlen": 32,
    "slw.difficulty_step": 32,
    "slw.total_steps": 6,
    "eval.every": 0,
    "checkpoint.every": 0,
}


def _train(smoke, tmp_path, name, overrides):
    """Train in this process; also returns the (sequences, length) of every training micro-batch."""
    t = Trainer(smoke.cfg(tmp_path, name, overrides), log=lambda *a, **k: None)
    shapes, loss = [], t.train_loss

    def spy(model, x):
        shapes.append(tuple(x.shape))
        return loss(model, x)

    t.train_loss = spy
    try:
        t.run()
    finally:
        t.close()
    return smoke.steps(tmp_path / name), shapes


@pytest.mark.slow
def test_control_matches_slw_tokens_at_every_step(smoke, tmp_path):
    slw, slw_shapes = _train(smoke, tmp_path, "slw", SLW)
    ctl, ctl_shapes = _train(smoke, tmp_path, "ctl", {**SLW, "slw.control": "batch"})
    assert len(ctl) == len(slw) > 6  # the short steps carry fewer tokens: more steps than the 6 full ones
    per_step = np.diff(ctl.tokens, prepend=0)
    np.testing.assert_array_equal(per_step, np.diff(slw.tokens, prepend=0))
    np.testing.assert_array_equal(per_step, ctl.batch_size * ctl.seqlen)
    assert set(slw.seqlen[:6]) == {32, 64, 96, 128} and (ctl.seqlen == 128).all()
    np.testing.assert_array_equal(ctl.batch_size, slw.seqlen * 8 // 128)  # 2, 4, 6, then 8 sequences
    np.testing.assert_array_equal(ctl.lr, slw.lr)  # the same tokens: the same LR schedule step by step
    # every training forward is full length (plus the next-token target), two micro-batches per step
    assert {length for _, length in ctl_shapes} == {129} and len(ctl_shapes) == 2 * len(ctl)
    assert [rows for rows, _ in ctl_shapes[::2]] == list(ctl.batch_size // 2)
    assert {rows for rows, _ in slw_shapes} == {4}


def test_control_rejects_lengths_that_are_not_whole_sequences(smoke, tmp_path):
    with pytest.raises(ConfigError, match="multiples of 32"):  # 4 x length must be a multiple of 128
        smoke.cfg(
            tmp_path, "bad", {**SLW, "slw.control": "batch", "slw.min_seqlen": 8, "slw.difficulty_step": 8}
        ).validate()
    with pytest.raises(ConfigError, match="slw.enabled"):
        smoke.cfg(tmp_path, "off", {"slw.control": "batch"}).validate()


def test_token_matched_batch_and_schedule_lengths():
    assert token_matched_batch(8, 64, 512) == 1 and token_matched_batch(8, 512, 512) == 8
    with pytest.raises(ValueError, match="multiples of 64"):
        token_matched_batch(8, 8, 512)
    sched = SLWSchedule(min_seqlen=8, max_seqlen=64, total_steps=20, difficulty_step=8)
    brute = [sched.seqlen(t) for t in range(1, 200)]
    assert schedule_lengths(sched) == list(dict.fromkeys(brute))
