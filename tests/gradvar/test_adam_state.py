"""Adam variance state and update size against a direct read of optimizer.state and a parameter copy."""

import numpy as np
import pytest
import torch
from gv_helpers import accumulate, tiny_gpt2

import gradvar

VARIANTS = [{"foreach": False}, {"foreach": True}, {"fused": True}]


@pytest.mark.parametrize("opt_cls", [torch.optim.Adam, torch.optim.AdamW])
@pytest.mark.parametrize("kw", VARIANTS, ids=["loop", "foreach", "fused"])
def test_adam_state_matches_optimizer_state(tmp_path, opt_cls, kw):
    model = tiny_gpt2()
    opt = opt_cls(model.parameters(), lr=1e-2, **kw)
    mon = gradvar.Monitor(model, opt, tmp_path, "full")
    expected = []
    for step in range(3):
        x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(step))
        accumulate(model, x.split(2))
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        vs = [opt.state[p]["exp_avg_sq"] for p in model.parameters()]
        ms = [opt.state[p]["exp_avg"] for p in model.parameters()]
        d2 = sum(((p.detach() - b).double() ** 2).sum() for p, b in zip(model.parameters(), before))
        p2 = sum((p.detach().double() ** 2).sum() for p in model.parameters())
        expected.append(
            {
                "adam_v_max": max(v.max().item() for v in vs),
                "adam_v_l1": sum(v.double().sum().item() for v in vs),
                "adam_v_min": min(v.min().item() for v in vs),
                "adam_m_norm": sum((m.double() ** 2).sum() for m in ms).sqrt().item(),
                "update_rms": (d2 / p2).sqrt().item(),
            }
        )
        opt.zero_grad()
        mon.step()
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    for i, want in enumerate(expected):
        for col, value in want.items():
            assert steps[col][i] == pytest.approx(value, rel=1e-5, abs=1e-12), col


def test_per_group_adam_state_sums_to_total(tmp_path):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper")
    accumulate(model, [torch.randint(0, 64, (2, 16))])
    opt.step()
    mon.step()
    mon.close()
    t = gradvar.read_records(tmp_path)
    layers, steps = t["layers"], t["steps"]
    l1 = layers[layers.stat == "adam_v_l1"]
    assert set(l1.group) >= {
        "tok_emb",
        "pos_emb",
        "block0.attn",
        "block0.mlp",
        "block0.ln",
        "block1.attn",
        "final_norm",
    }
    assert "head" not in set(l1.group), "a tied head shares the token embedding and counts once"
    assert l1.value.sum() == pytest.approx(steps.adam_v_l1[0], rel=1e-6)
    vmax = layers[layers.stat == "adam_v_max"]
    assert vmax.value.max() == pytest.approx(steps.adam_v_max[0], rel=1e-6)


def test_no_state_before_first_step_is_nan(tmp_path):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper")
    mon.step(loss=torch.tensor(1.0))  # no backward, no optimizer step
    mon.close()
    row = gradvar.read_records(tmp_path)["steps"].iloc[0]
    assert np.isnan(row["adam_v_max"]) and row["loss"] == 1.0
