"""The model: Hugging Face transformers GPT-2 built from a config (no weights are downloaded), the optional
torch.compile of its training loss, and the FLOP accounting behind MFU."""

from __future__ import annotations

import math

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .config import ConfigError, ModelConfig

ATTENTION = ("sdpa", "eager")

PEAK_BF16_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "H100 PCIE": 756e12,
    "H100 NVL": 835e12,
    "H200 NVL": 835e12,
    "A100": 312e12,
}
"""Dense bf16 tensor-core peak per chip from NVIDIA's datasheets (no sparsity); the longest name that the
device name contains wins, so 'NVIDIA H100 PCIe' is not taken for the SXM part."""


def build_model(cfg: ModelConfig, vocab_size: int) -> GPT2LMHeadModel:
    if cfg.attn not in ATTENTION:
        raise ConfigError(f"model.attn must be one of {', '.join(ATTENTION)}, got {cfg.attn!r}")
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        use_cache=False,
        # "sdpa": torch's scaled_dot_product_attention picks the flash / memory-efficient kernels on a GPU;
        # "eager": transformers' explicit softmax(q k^T) v, the reference the sdpa path is tested against
        attn_implementation=cfg.attn,
    )
    return GPT2LMHeadModel(config)


def compiled(fn, backend: str):
    """`fn` (a loss function of (model, batch)) compiled with torch.compile, or `fn` itself for 'off'.

    Compiling the loss with the model lets inductor fuse the logits' float cast into the cross-entropy,
    which in eager mode writes and reads the (B, T, V) logits in fp32 several times. Only the training
    forward goes through it: evaluation and the monitor's probes call the plain module (same weights), so
    they add no graphs to compile.
    """
    if backend in ("off", "", "none"):
        return fn
    if backend not in torch.compiler.list_backends(exclude_tags=()):
        raise ConfigError(
            f"model.compile must be 'off' or a torch.compile backend "
            f"({', '.join(torch.compiler.list_backends())}, ...), got {backend!r}"
        )
    return torch.compile(fn, backend=backend)


def param_groups(model: torch.nn.Module, weight_decay: float, planted: str = "") -> list[dict]:
    """Decay 2-D weights (matrices, embeddings); not biases or layer norms (GPT-2/Megatron practice).
    planted: a gradvar group whose parameters get optimizer groups of their own, marked `planted` (the LR plant
    of trainer.plant; the same hyperparameters, so the same update)."""
    from gradvar.groups import group_name

    decay, no_decay, p_decay, p_no_decay = [], [], [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            mine = bool(planted) and group_name(name) == planted
            ((p_decay if mine else decay) if p.dim() >= 2 else (p_no_decay if mine else no_decay)).append(p)
    if planted and not p_decay + p_no_decay:
        raise ConfigError(f"intervention.plant: no parameter of group {planted!r} in the model")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups += [
        {"params": ps, "weight_decay": wd, "planted": True}
        for ps, wd in ((p_decay, weight_decay), (p_no_decay, 0.0))
        if ps
    ]
    return groups


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_token(cfg: ModelConfig, n_params: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N + 12 L d T (PaLM's accounting, attention included)."""
    return 6 * n_params + 12 * cfg.n_layer * cfg.n_embd * seq_len


def peak_flops(device_name: str) -> float:
    """The chip's dense bf16 peak in FLOP/s, NaN for a chip not in PEAK_BF16_FLOPS (no MFU then)."""
    name = device_name.upper()
    for chip in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):  # GH200 before H200
        if chip in name:
            return PEAK_BF16_FLOPS[chip]
    return math.nan


def mfu(tokens_per_s: float, cfg: ModelConfig, n_params: int, seq_len: int, device_name: str, chips: int = 1) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the chips' dense bf16 peak (NaN if unknown)."""
    return tokens_per_s * flops_per_token(cfg, n_params, seq_len) / (peak_flops(device_name) * chips)
