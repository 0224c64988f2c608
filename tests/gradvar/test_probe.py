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
            # equal tokens: every sequence cut into pieces; a micro-batch is two sequences' pieces (K = 2)
            pieces = probe.reshape(-1, length)
            b_s = 2 * 32 // length
            g = micro_grads(model, pieces.split(b_s))
            G = g.mean(0)
            gs, gb = (g.double() ** 2).sum(1).mean().item(), (G.double() ** 2).sum().item()
            refs[length] = {
                "grad_norm": gb**0.5,
                "grad_trace_sigma": b_s * 2 * (gs - gb),
                "grad_sq_max": (G**2).max().item(),
                "grad_sq_max_micro": (g**2).mean(0).max().item(),
                "probe_tokens": 4 * 32,
                "loss": torch.stack([lm_loss(model, c) for c in pieces.split(b_s)]).mean().item(),
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


def test_pieces_overlap_by_the_offset_and_predict_disjoint_tokens():
    """With report_offset 1 (a loss predicting L tokens from L + 1) the pieces share one token, so the
    predicted tokens of all pieces are the sequence's L predictions exactly once at every length."""
    batch = torch.arange(2 * 17).reshape(2, 17)  # windows of L + 1 = 17 tokens
    q = SeqlenProbe(batch, lengths=[5, 17], micro_batch=1)
    q.report_offset = 1
    for length in (5, 17):
        x = q.pieces(length)
        assert x.shape == (2 * 16 // (length - 1), length)
        predicted = x[:, 1:].reshape(2, -1)
        assert torch.equal(predicted, batch[:, 1:])
