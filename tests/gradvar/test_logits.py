"""Logit maxima (Wortsman et al. 2023) against direct reads: the output logits the training forwards return,
and attention scores recomputed block by block from the probe batch's hidden states."""

import pytest
import torch
from gv_helpers import tiny_gpt2

import gradvar


def attention_logit_reference(model, x) -> float:
    """max over blocks, heads and causal (query, key) pairs of |q.k| / sqrt(head_dim), from scratch."""
    n_head = model.config.n_head
    with torch.no_grad():
        hidden = model(input_ids=x, output_hidden_states=True).hidden_states  # hidden[i]: block i's input
        best = 0.0
        for block, h in zip(model.transformer.h, hidden):
            q, k, _ = block.attn.c_attn(block.ln_1(h)).split(model.config.n_embd, dim=-1)
            hs = q.shape[-1] // n_head
            for head in range(n_head):
                qh, kh = q[..., head * hs : (head + 1) * hs], k[..., head * hs : (head + 1) * hs]  # (B, T, hs)
                scores = torch.einsum("bqd,bkd->bqk", qh.double(), kh.double()) / hs**0.5
                causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
                best = max(best, scores.abs()[:, causal].max().item())
    return best


def test_logit_maxima_match_direct_reads(tmp_path):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    probe = torch.randint(0, 64, (3, 32), generator=torch.Generator().manual_seed(9))
    mon = gradvar.Monitor(model, opt, tmp_path, "full", probe_batch=probe, probe_every=100)
    want_out, want_att = [], []
    for step in range(3):
        x = torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(step))
        top = 0.0
        for chunk in x.split(2):
            out = model(input_ids=chunk, labels=chunk)
            top = max(top, out.logits.detach().abs().max().item())
            (out.loss / 2).backward()
        opt.step()
        opt.zero_grad()
        want_out.append(top)
        model.eval()
        want_att.append(attention_logit_reference(model, probe))
        model.train()
        mon.step()
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    assert steps.max_output_logit.tolist() == pytest.approx(want_out, rel=1e-6)
    assert steps.max_attn_logit.tolist() == pytest.approx(want_att, rel=1e-5)
    assert want_att[2] != pytest.approx(want_att[0], rel=1e-3), "the updates must move the maxima"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_abs_max_is_the_largest_magnitude_either_sign(dtype):
    from gradvar.quantities.logits import abs_max

    x = torch.tensor([[0.5, -7.25], [3.0, 1.0]], dtype=dtype)
    assert abs_max(x).item() == 7.25 and abs_max(-x).item() == 7.25 and abs_max(x).dtype == torch.float32
    assert abs_max(torch.tensor([1.0, float("nan"), -2.0], dtype=dtype)).isnan()  # a NaN logit is not hidden
    assert abs_max(torch.tensor([1.0, float("-inf")], dtype=dtype)).item() == float("inf")
