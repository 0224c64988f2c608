"""The sequence-length probe: naive reference values, and it leaves model, grads, optimizer and RNG as they were."""

import copy

import pytest
import torch
from gv_helpers import accumulate, lm_loss, micro_grads, tiny_gpt2

import gradvar
from gradvar.quantities import SeqlenProbe, every


def _train_one(model, opt):
    accumulate(model, torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(9)).split(2))
    opt.step()


def test_probe_values_match_reference_and_touch_nothing(tmp_path):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    _train_one(model, opt)
    opt.zero_grad()
    probe = torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(3))
    q = SeqlenProbe(probe, lengths=[8, 32], micro_batch=2, schedule=every(1))
    mon = gradvar.Monitor(model, opt, tmp_path, [gradvar.quantities.Loss(), q])
    # a gradient left in .grad by the user must survive the probe untouched
    accumulate(model, [probe[:2, :8]])
    grads_before = [p.grad.clone() for p in model.parameters()]
    params_before = copy.deepcopy(model.state_dict())
    opt_before = copy.deepcopy(opt.state_dict())
    rng_before = torch.get_rng_state()
    model.train()
    with mon.paused():
        refs = {}
        for length in (8, 32):
            g = micro_grads(model, probe[:, :length].split(2))
            G = g.mean(0)
            v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in model.parameters()])
            gs, gb = (g.double() ** 2).sum(1).mean().item(), (G.double() ** 2).sum().item()
            refs[length] = {
                "grad_norm": gb**0.5,
                "grad_trace_sigma": 2 * 2 * (gs - gb),
                "adam_v_max_if_applied": (0.95 * v + 0.05 * G**2).max().item(),
                "loss": torch.stack([lm_loss(model, c) for c in probe[:, :length].split(2)]).mean().item(),
            }
    mon.step(loss=torch.tensor(1.0))
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng_before)
    for p, g in zip(model.parameters(), grads_before):
        assert torch.equal(p.grad, g)
    for k, v in model.state_dict().items():
        assert torch.equal(v, params_before[k])
    for p_id, st in opt.state_dict()["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(st[key], opt_before["state"][p_id][key])
    mon.close()
    probes = gradvar.read_records(tmp_path)["probes"].set_index("probe_seqlen")
    for length, ref in refs.items():
        for col, want in ref.items():
            assert probes.loc[length, col] == pytest.approx(want, rel=1e-4), (length, col)
        assert probes.loc[length, "grad_trace_sigma_per_token"] == pytest.approx(
            ref["grad_trace_sigma"] * length, rel=1e-4
        )


def test_probe_needs_two_microbatches():
    with pytest.raises(ValueError, match="at least 2 micro-batches"):
        SeqlenProbe(torch.zeros(2, 8, dtype=torch.long), micro_batch=2)


def test_full_preset_records_probe_loss_and_logits(tmp_path):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    probe = torch.randint(0, 64, (4, 32))
    mon = gradvar.Monitor(model, opt, tmp_path, "full", probe_batch=probe, probe_every=2, probe_micro_batch=2)
    for _ in range(3):
        accumulate(model, torch.randint(0, 64, (4, 32)).split(2))
        opt.step()
        opt.zero_grad()
        mon.step()
    mon.close()
    t = gradvar.read_records(tmp_path)
    steps = t["steps"]
    assert steps.probe_loss.notna().all() and (steps.probe_loss_ratio[0] == 1.0)
    assert (steps.max_output_logit > 0).all() and (steps.max_attn_logit > 0).all()
    assert sorted(t["probes"].step.unique()) == [1, 3]
