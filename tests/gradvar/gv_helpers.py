"""Small real problems for the quantity tests: a tiny HF GPT-2 and a linear model with known moments."""

from __future__ import annotations

import socket

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def tiny_gpt2(seed: int = 0, vocab: int = 64, n_positions: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=16,
        n_positions=n_positions,
        vocab_size=vocab,
        bos_token_id=None,
        eos_token_id=None,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(cfg)


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
