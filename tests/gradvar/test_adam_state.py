"""Adam variance state and update size against a direct read of optimizer.state and a parameter copy."""

import numpy as np
import pytest
import torch
from gv_helpers import accumulate, tiny_gpt2

import gradvar
from gradvar import _torch_compat as tc

VARIANTS = [{"foreach": False}, {"foreach": True}, {"fused": True}]


@pytest.mark.parametrize("host_reads", [True, False], ids=["cpu-path", "accelerator-path"])
@pytest.mark.parametrize("opt_cls", [torch.optim.Adam, torch.optim.AdamW])
@pytest.mark.parametrize("kw", VARIANTS, ids=["loop", "foreach", "fused"])
def test_adam_state_matches_optimizer_state(tmp_path, opt_cls, kw, host_reads, monkeypatch):
    monkeypatch.setattr(tc, "HOST_READS_FREE", host_reads)  # v's L1 as a sum per tensor, or one foreach norm
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


def _vhat(opt, params):
    """Direct read of the optimizer state: max and sum of exp_avg_sq / (1 - beta2^t), one parameter at a time."""
    beta2 = {id(p): g["betas"][1] for g in opt.param_groups for p in g["params"]}
    out = []
    for p in params:
        st = opt.state[p]
        corr = 1.0 - beta2[id(p)] ** float(st["step"])
        out.append((st["exp_avg_sq"].double().max().item() / corr, st["exp_avg_sq"].double().sum().item() / corr))
    return out


@pytest.mark.parametrize("kw", VARIANTS, ids=["loop", "foreach", "fused"])
def test_bias_corrected_v_with_uneven_step_counts(tmp_path, kw):
    """Two optimizer groups with different beta2, and one weight left without a gradient at the first step,
    so the step counts differ inside the layer group block0.attn (its c_attn weight lags its bias)."""
    model = tiny_gpt2()
    lagging = model.transformer.h[0].attn.c_attn.weight
    ps = list(model.parameters())
    half = len(ps) // 2
    groups = [{"params": ps[:half], "betas": (0.9, 0.95)}, {"params": ps[half:], "betas": (0.8, 0.99)}]
    opt = torch.optim.AdamW(groups, lr=1e-2, **kw)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper")
    expected = []
    for step in range(3):
        x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(step))
        accumulate(model, x.split(2))
        if step == 0:
            lagging.grad = None  # AdamW skips it: its step count stays one behind the rest
        opt.step()
        have = [p for p in model.parameters() if p in opt.state]
        per = dict(zip(map(id, have), _vhat(opt, have)))
        expected.append(per)
        opt.zero_grad()
        mon.step()
    mon.close()
    assert float(opt.state[lagging]["step"]) == 2 and float(opt.state[ps[0]]["step"]) == 3
    t = gradvar.read_records(tmp_path)
    steps, layers = t["steps"], t["layers"]
    for i, per in enumerate(expected):
        assert steps.adam_vhat_max[i] == pytest.approx(max(m for m, _ in per.values()), rel=1e-5)
        assert steps.adam_vhat_l1[i] == pytest.approx(sum(s for _, s in per.values()), rel=1e-5)
    # per group: block0.attn mixes step counts 2 and 3 at the last step
    attn = [p for n, p in model.named_parameters() if n.startswith("transformer.h.0.attn.")]
    row = layers[(layers.step == 3) & (layers.group == "block0.attn")].set_index("stat").value
    assert row["adam_vhat_l1"] == pytest.approx(sum(expected[2][id(p)][1] for p in attn), rel=1e-5)
    assert row["adam_vhat_max"] == pytest.approx(max(expected[2][id(p)][0] for p in attn), rel=1e-5)
    # and the correction is real: at step 1 vhat = v / (1 - beta2), far above the raw state
    assert steps.adam_vhat_l1[0] > 10 * steps.adam_v_l1[0]
