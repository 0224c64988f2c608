"""The model: Hugging Face transformers GPT-2 built from a config (no weights are downloaded)."""
from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .config import ModelConfig


def build_model(cfg: ModelConfig, vocab_size: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        tie_word_embeddings=cfg.tie_embeddings, bos_token_id=None, eos_token_id=None, use_cache=False,
    )
    config._attn_implementation = "sdpa"
    return GPT2LMHeadModel(config)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay 2-D weights (matrices, embeddings); not biases or layer norms (GPT-2/Megatron practice)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_token(cfg: ModelConfig, n_params: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N + 12 L d T (PaLM's accounting, attention included)."""
    return 6 * n_params + 12 * cfg.n_layer * cfg.n_embd * seq_len
