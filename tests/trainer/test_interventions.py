"""Spike interventions on small constructed cases: the device z gate, the skip-step AdamW, the rewind rule."""

import math

import numpy as np
import pytest
import torch

from gradvar.spikes import SpikeRule, z_spikes
from trainer.interventions import DeviceZGate, SkipStepAdamW, rewind_needed, spike_keep


def test_device_gate_equals_host_z_rule():
    rng = np.random.default_rng(0)
    loss = 3 + 0.05 * rng.standard_normal(200)
    loss[[60, 150]] = [4.0, np.nan]
    rule = SpikeRule(z_window=32)
    gate = DeviceZGate(rule, "cpu")
    got = []
    for v in loss:
        t = torch.tensor(v, dtype=torch.float32)
        got.append(bool(gate.is_spike(t)))
        gate.push(t)
    assert got == z_spikes(loss.astype(np.float32), rule).tolist()


def _models():
    torch.manual_seed(0)
    a = torch.nn.Linear(6, 3)
    b = torch.nn.Linear(6, 3)
    b.load_state_dict(a.state_dict())
    return a, b


def test_skip_step_adamw_equals_adamw_when_kept():
    a, b = _models()
    ref = torch.optim.AdamW(a.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
    ours = SkipStepAdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for i in range(5):
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(i))
        for m, opt in ((a, ref), (b, ours)):
            m(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(ref.state[p]["exp_avg_sq"], ours.state[q]["exp_avg_sq"], atol=1e-8)


def test_skipped_step_changes_nothing_even_with_inf_gradients():
    _, m = _models()
    opt = SkipStepAdamW(m.parameters(), lr=1e-2)
    m(torch.randn(2, 6)).sum().backward()
    opt.step()
    before = [p.detach().clone() for p in m.parameters()]
    state = {k: v.clone() for k, v in opt.state[m.weight].items()}
    m.weight.grad.fill_(math.inf)
    opt.keep = torch.tensor(0.0)
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))
    assert all(torch.equal(opt.state[m.weight][k], v) for k, v in state.items())


def test_spike_keep_combines_gates():
    rule = SpikeRule(z_window=16, z_min_history=4)
    gates = [DeviceZGate(rule, "cpu"), DeviceZGate(rule, "cpu")]
    for i in range(10):
        values = [torch.tensor(3.0 + 0.01 * (i % 3)), torch.tensor(1.0 + 0.01 * (i % 2))]
        assert spike_keep(list(zip(gates, values))) == 1
    assert spike_keep([(gates[0], torch.tensor(3.0)), (gates[1], torch.tensor(50.0))]) == 0


@pytest.mark.parametrize(
    "loss,best,want", [(5.0, 4.0, True), (4.1, 4.0, False), (math.nan, 4.0, True), (9.0, math.inf, False)]
)
def test_rewind_rule(loss, best, want):
    assert rewind_needed(loss, best, SpikeRule()) is want
