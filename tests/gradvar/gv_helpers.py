"""Small real problems for the quantity tests: a tiny HF GPT-2 and a linear model with known moments."""

from __future__ import annotations

import socket

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def tiny_gpt2(
    seed: int = 0, vocab: int = 64, n_positions: int = 32, n_embd: int = 16, n_head: int = 2
) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        n_layer=2,
        n_head=n_head,
        n_embd=n_embd,
        n_positions=n_positions,
        vocab_size=vocab,
        bos_token_id=None,
        eos_token_id=None,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(cfg)


PAPER_COLUMNS = tuple(
    "loss loss_max grad_norm grad_norm_clipped grad_trace_sigma grad_true_sq grad_noise_scale grad_var_sum "
    "adam_v_max adam_v_l1 adam_v_min adam_m_norm update_rms probe_loss batch_size tokens lr micro_batches "
    "nonfinite_grad".split()
)
"""The steps columns that the sharded tests compare with one process (paper preset, UpdateSize, a probe)."""


def step_batches(k: int, b_s: int, steps: int) -> list[torch.Tensor]:
    """One (k * b_s, 16) batch of tokens per optimizer step, the same on every rank."""
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 64, (k * b_s, 16), generator=g) for _ in range(steps)]


def paper_quantities() -> list:
    """The paper preset with a probe batch and grad_var_max at every step, plus the update size."""
    from gradvar import quantities as Q

    probe = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    return every_step(Q.build("paper", probe_batch=probe)) + [Q.UpdateSize()]


def every_step(quantities="paper") -> list:
    """A preset (or list) with the element-wise variance at every step: `paper` measures grad_var_max every
    ELEMENTWISE_EVERY steps only, and a test that checks it at each of a few steps needs it at each."""
    from gradvar import quantities as Q

    qs = Q.build(quantities) if isinstance(quantities, str) else quantities
    return [Q.GradVariance(q.schedule) if isinstance(q, Q.GradVariance) else q for q in qs]


def single_reference(model, opt, run_dir, batches, b_s: int, clip: float) -> None:
    """The one-process run the sharded tests compare with: each step's batch as micro-batches of b_s,
    accumulated, clipped through the monitor, stepped."""
    import gradvar

    mon = gradvar.Monitor(model, opt, run_dir, paper_quantities(), notify=lambda *a: None)
    for x in batches:
        accumulate(model, x.split(b_s))
        mon.clip_grad_norm_(clip)
        opt.step()
        opt.zero_grad()
        mon.step()
    mon.close()


def lm_loss(model, x):
    return model(input_ids=x, labels=x).loss


def micro_grads(model, chunks):
    """Naive reference: each micro-batch's gradient g_k from its own autograd call."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for x in chunks:
        grads = torch.autograd.grad(lm_loss(model, x), params)
        out.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(out)  # (K, n_params)


def accumulate(model, chunks):
    """The usual accumulation loop: (loss / K).backward() per micro-batch."""
    losses = []
    for x in chunks:
        loss = lm_loss(model, x)
        (loss / len(chunks)).backward()
        losses.append(loss.detach())
    return losses


def free_port() -> int:
    """A free local TCP port for a spawned process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
