"""nonfinite_grad: the count of non-finite elements of the gradient the last backward pass left, checked against a
direct count of `.grad` taken right after the backward, whoever changes `.grad` before the monitor reads it."""

from __future__ import annotations

import math

import pytest
import torch
from client_loops import notes
from gv_helpers import tiny_gpt2

import gradvar
from gradvar import _torch_compat as tc

BIG = 1e25
BAD = {2: math.inf, 3: math.nan, 4: BIG}
"""Steps whose gradient of the `w` parameter is all inf (a finite forward whose backward overflows float32), NaN,
or finite but so large that its squared norm overflows to inf (no non-finite element: it counts 0)."""


@pytest.fixture(params=[True, False], ids=["host-reads", "device-only"], autouse=True)
def count_path(request, monkeypatch):
    """Both ways of counting: on the CPU only the parameters whose norm is not finite are read; on an
    accelerator every gradient is, with no sync. Each must give the same count."""
    monkeypatch.setattr(tc, "HOST_READS_FREE", request.param)


class Blowup(torch.nn.Module):
    """A small regression whose extra parameter `w` gets a gradient of inf or NaN on demand, the rest finite."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.w = torch.nn.Parameter(torch.ones(3))
        self.bad = 0.0

    def forward(self, x):
        loss = self.lin(x).pow(2).mean()
        if math.isinf(self.bad):  # d/dw = 1e30 * 1e30: inf in float32
            return loss + (self.w * 1e30).sum() * 1e30
        if math.isnan(self.bad):
            return loss + (self.w * math.nan).sum()
        if self.bad == BIG:  # d/dw = 1e20 * 1e5, finite; |g|^2 = 3e50 is inf in float32
            return loss + (self.w * 1e20).sum() * 1e5
        return loss + self.w.sum() * 0.0  # a finite gradient (zeros): every parameter has one at every step


@pytest.mark.parametrize("clip", ["none", "monitor", "torch"])
def test_count_is_the_passes_or_nan_with_a_note(tmp_path, clip):
    torch.manual_seed(0)
    model = Blowup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", notify=lambda *a: None)
    want = []
    for step in range(1, 6):
        model.bad = BAD.get(step, 0.0)
        for x in torch.randn(2, 5, 4).unbind():
            (model(x) / 2).backward()
        want.append(sum(int((~torch.isfinite(p.grad)).sum()) for p in model.parameters()))
        if clip == "monitor":
            mon.clip_grad_norm_(1.0)
        elif clip == "torch":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.load_state_dict(start)  # a non-finite update would carry into the next steps' gradients
        opt.zero_grad()
        mon.step(loss=1.0, batch_size=2, seqlen=5)
    mon.close()
    got = gradvar.read_records(tmp_path)["steps"].nonfinite_grad.tolist()
    assert want == [0, 3, 3, 0, 0]
    said = [m for m in notes(tmp_path) if m.startswith("nonfinite_grad is NaN")]
    if clip == "torch":
        # a NaN norm: torch multiplies every element by NaN before the monitor's read; an overflowing norm: torch
        # zeroes the gradient, which a zero_grad before the read would do too (the count cannot be told)
        assert got[:2] == want[:2] and math.isnan(got[2]) and math.isnan(got[3]) and got[4] == 0 and len(said) == 1
    else:
        assert got == want and not said


@pytest.mark.parametrize("clip", [False, True], ids=["no-clip", "torch-clip"])
def test_zero_grad_before_monitor_step_after_a_scaler_skip(tmp_path, clip):
    """A step the GradScaler skips, then zero_grad(set_to_none=False) before Monitor.step: .grad holds zeros, not
    the gradient that made the scaler skip, so the count and the norm after clipping are NaN (the count with a
    note), never 0; with or without torch's clipping (which makes the monitor read each pass as it ends)."""
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", notify=lambda *a: None)
    for i in range(3):
        x = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(i))
        for c in x.split(2):
            loss = model(input_ids=c, labels=c).loss
            scaler.scale(loss * (math.inf if i == 1 else 1.0) / 2).backward()
        if clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=False)
        mon.step()
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    assert math.isnan(steps.nonfinite_grad[1]) and math.isnan(steps.grad_norm_clipped[1])
    assert steps.loc[[0, 2], ["nonfinite_grad", "grad_norm_clipped"]].notna().all(axis=None)
    assert any(m.startswith("nonfinite_grad is NaN") for m in notes(tmp_path))
