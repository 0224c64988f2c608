"""Monitor.clip_grad_norm_ in a loop that changes `.grad` itself first (a hand-made unscale, a rescale): the norm
after clipping is the norm of what the optimizer is handed, checked against a direct read of `.grad`, and the
pre-clip norm is the backward's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gv_helpers import accumulate, tiny_gpt2

import gradvar


def _norm(model) -> float:
    return float(torch.stack([p.grad.double().norm() for p in model.parameters() if p.grad is not None]).norm())


@pytest.mark.parametrize("max_norm", [0.1, 1e6], ids=["clips", "no-op"])
def test_clipped_norm_after_the_loop_rescaled_grad(tmp_path, max_norm):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", notify=lambda *a: None)
    pre, handed = [], []
    for step in range(4):
        x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(step))
        accumulate(model, x.split(2))
        pre.append(_norm(model))
        for p in model.parameters():
            p.grad.mul_(3.0)
        norm = mon.clip_grad_norm_(max_norm)
        assert float(norm) == pytest.approx(3 * pre[-1], rel=1e-5)  # the norm it clipped: .grad as the loop left it
        handed.append(_norm(model))
        opt.step()
        mon.step()
        opt.zero_grad()
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    np.testing.assert_allclose(steps.grad_norm, pre, rtol=1e-5)
    np.testing.assert_allclose(steps.grad_norm_clipped, handed, rtol=1e-5)
    if max_norm < 1:
        np.testing.assert_allclose(handed, max_norm, rtol=1e-4)
