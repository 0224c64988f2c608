"""Causal branches: four arms (length x tokens per step) from one checkpoint start from identical state,
train at their designed shapes with the same LR, and leave the source run's files byte for byte as they were."""

import hashlib

import numpy as np
import pytest
import torch

from study.branch import ARMS, make_branches
from trainer.config import ConfigError, TrainConfig, apply_overrides, load_json
from trainer.train import Trainer


def _hashes(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.slow
def test_branches_start_from_one_state_and_leave_the_source_untouched(smoke, tmp_path):
    source_cfg = smoke.cfg(tmp_path / "src", "run", {"optim.max_steps": 10})
    smoke.train(source_cfg)
    source = source_cfg.run_dir
    before = _hashes(source)
    ckpt = torch.load(source / "checkpoints" / "step-000000010.pt", weights_only=True)
    arms = make_branches(source, 10, tmp_path / "branches", short=64, steps=3)
    assert tuple(arms) == ARMS
    steps = {}
    for arm, run_dir in arms.items():
        t = Trainer(apply_overrides(TrainConfig(), load_json(run_dir / "config.json")), resume=True, log=lambda *a: 0)
        assert t.step == 10 and t.tokens == ckpt["tokens"]
        assert _same(t.model.state_dict(), ckpt["model"]), arm
        assert _same(t.opt.state_dict(), ckpt["optimizer"]), arm
        assert _same(t.sampler.state_dict(), ckpt["sampler"]), arm
        try:
            t.run()
        finally:
            t.close()
        steps[arm] = smoke.steps(run_dir)
    assert _hashes(source) == before
    for arm, (rows, length) in {
        "short-low": (4, 64),
        "full-low": (2, 128),
        "short-high": (8, 64),
        "full-high": (4, 128),
    }.items():
        s = steps[arm]
        assert list(s.step) == [11, 12, 13] and (s.batch_size == rows).all() and (s.seqlen == length).all(), arm
        np.testing.assert_array_equal(s.lr, steps["full-high"].lr)  # one LR for all arms, step by step
    tok = {arm: np.diff(s.tokens, prepend=ckpt["tokens"]) for arm, s in steps.items()}
    assert (tok["short-low"] == tok["full-low"]).all() and (tok["short-high"] == tok["full-high"]).all()
    assert (2 * tok["short-low"] == tok["full-high"]).all()
    assert not np.allclose(steps["short-low"].loss, steps["full-high"].loss)  # the arms did differ


def test_branch_refuses_missing_checkpoint_and_odd_lengths(smoke, tmp_path):
    cfg = smoke.cfg(tmp_path, "run", {"optim.max_steps": 1, "checkpoint.every": 1})
    smoke.train(cfg)
    with pytest.raises(ConfigError, match="have: step-000000001.pt"):
        make_branches(cfg.run_dir, 5, tmp_path / "b", short=64, steps=2)
    with pytest.raises(ConfigError, match="not a multiple"):
        make_branches(cfg.run_dir, 1, tmp_path / "b", short=48, steps=2)
