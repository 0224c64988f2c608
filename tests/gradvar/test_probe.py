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


def naive_probe(model, probe, length, offset, micro):
    """A plain loop: cut every sequence into pieces by hand, one autograd call per micro-batch."""
    n, full = probe.shape
    stride = length - offset
    per_seq = (full - offset) // stride
    pieces = [[probe[i, j * stride : j * stride + length] for j in range(per_seq)] for i in range(n)]
    chunks = [torch.stack([p for i in range(k, k + micro) for p in pieces[i]]) for k in range(0, n - n % micro, micro)]
    g = micro_grads(model, chunks).double()
    G = g.mean(0)
    K, b = len(chunks), chunks[0].shape[0]
    gs, gb = (g**2).sum(1).mean().item(), (G**2).sum().item()
    trace = b * K * (gs - gb) / (K - 1)
    ref = {
        "probe_tokens": K * b * stride,
        "grad_norm": gb**0.5,
        "grad_sq_max": (G**2).max().item(),
        "grad_sq_max_micro": (g**2).mean(0).max().item(),
        "grad_trace_sigma": trace,
        "grad_trace_sigma_per_token": trace * stride,
        "loss": torch.stack([lm_loss(model, c) for c in chunks]).mean().item(),
    }
    # the tokens the loss predicts: disjoint pieces, (sequence, position) pairs
    predicted = [
        (i, j * stride + t) for i in range(n - n % micro) for j in range(per_seq) for t in range(offset, length)
    ]
    assert len(predicted) == len(set(predicted)) == ref["probe_tokens"]
    return ref, set(predicted)


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
        refs = {length: naive_probe(model, probe, length, 0, 2)[0] for length in (8, 32)}
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
    assert list(probes.probe_tokens) == [128, 128]  # 4 sequences x 32 tokens at both lengths
    for length, ref in refs.items():
        for col, want in ref.items():
            assert probes.loc[length, col] == pytest.approx(want, rel=1e-4), (length, col)
    # measures that can differ by length: they do here (context differs)
    assert probes.loc[8, "grad_sq_max"] != pytest.approx(probes.loc[32, "grad_sq_max"], rel=1e-3)


def test_offset_pieces_predict_the_same_tokens_at_every_length(tmp_path):
    """A loss predicting L tokens from L + 1 (report_offset 1): pieces overlap by one token, so the predicted
    tokens are disjoint and the same at every dividing length; a length that does not divide keeps whole pieces."""
    model = tiny_gpt2(n_positions=64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train_one(model, opt)
    opt.zero_grad()
    probe = torch.randint(0, 64, (5, 33), generator=torch.Generator().manual_seed(4))  # 5: one sequence left over
    q = SeqlenProbe(probe, lengths=[5, 9, 13, 33], micro_batch=2, schedule=every(1), loss_fn=lm_loss)
    q.report_offset = 1
    mon = gradvar.Monitor(model, opt, tmp_path, [gradvar.quantities.Loss(), q])
    model.train()
    with mon.paused():
        refs = {length - 1: naive_probe(model, probe, length, 1, 2) for length in (5, 9, 13, 33)}
    mon.step(loss=torch.tensor(1.0))
    mon.close()
    all_tokens = {(i, t) for i in range(4) for t in range(1, 33)}
    for reported in (4, 8, 32):
        assert refs[reported][1] == all_tokens, reported
    assert refs[12][1] < all_tokens and len(refs[12][1]) == 4 * 2 * 12  # floor(32 / 12) = 2 pieces a sequence
    probes = gradvar.read_records(tmp_path)["probes"].set_index("probe_seqlen")
    assert sorted(probes.index) == [4, 8, 12, 32]
    assert list(probes.loc[[4, 8, 32], "probe_tokens"]) == [128, 128, 128] and probes.loc[12, "probe_tokens"] == 96
    for reported, (ref, _) in refs.items():
        for col, want in ref.items():
            assert probes.loc[reported, col] == pytest.approx(want, rel=1e-4), (reported, col)


def test_probe_needs_two_microbatches_and_lengths_it_can_cut():
    with pytest.raises(ValueError, match="at least 2 micro-batches"):
        SeqlenProbe(torch.zeros(2, 8, dtype=torch.long), micro_batch=2)
    with pytest.raises(ValueError, match="exceed"):
        SeqlenProbe(torch.zeros(4, 8, dtype=torch.long), lengths=[4, 16])


def test_one_default_ladder():
    """Powers of two from 16 below the full length, then the full length: the trainer's default as well."""
    assert SeqlenProbe(torch.zeros(4, 100, dtype=torch.long)).lengths == [16, 32, 64, 100]
    assert SeqlenProbe(torch.zeros(4, 64, dtype=torch.long)).lengths == [16, 32, 64]
    assert SeqlenProbe(torch.zeros(4, 12, dtype=torch.long)).lengths == [12]


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
