"""Parameter groups for per-layer statistics: token/position embedding, each block's attention / MLP /
layer norms, final norm, head. A tied head shares its tensor with the token embedding and counts once
(named_parameters already yields a shared tensor once)."""
from __future__ import annotations

import re

import torch
from torch import nn

_GPT2 = [
    (re.compile(r"(^|\.)wte\."), "tok_emb"),
    (re.compile(r"(^|\.)wpe\."), "pos_emb"),
    (re.compile(r"(^|\.)h\.(\d+)\.attn\."), r"block{}.attn"),
    (re.compile(r"(^|\.)h\.(\d+)\.mlp\."), r"block{}.mlp"),
    (re.compile(r"(^|\.)h\.(\d+)\.ln_\d\."), r"block{}.ln"),
    (re.compile(r"(^|\.)ln_f\."), "final_norm"),
    (re.compile(r"(^|\.)lm_head\."), "head"),
]
_WRAPPERS = ("module.", "_orig_mod.", "base_model.model.")


def group_name(param_name: str) -> str:
    """Map a parameter name to its group; GPT-2 names first, then a generic 'layers.3.self_attn' rule."""
    name = param_name
    for prefix in _WRAPPERS:
        while name.startswith(prefix):
            name = name[len(prefix):]
    for pattern, label in _GPT2:
        m = pattern.search(name)
        if m:
            return label.format(m.group(2)) if "{}" in label else label
    parts = name.split(".")[:-1]  # drop weight/bias
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[i - 1 : i + 2]) if i else ".".join(parts[: i + 2])
    return ".".join(parts[-2:]) or name


def trainable_params(model: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    names, params = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            names.append(n)
            params.append(p)
    return names, params


def build_groups(names: list[str]) -> tuple[list[str], list[int]]:
    """(group names in first-seen order, group index of each parameter)."""
    order: dict[str, int] = {}
    index = []
    for n in names:
        g = group_name(n)
        index.append(order.setdefault(g, len(order)))
    return list(order), index
