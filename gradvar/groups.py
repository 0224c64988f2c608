"""Parameter groups for per-layer statistics: token/position embedding, each block's attention / MLP /
layer norms, final norm, head. A tied head shares its tensor with the token embedding and counts once
(named_parameters already yields a shared tensor once)."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
            name = name[len(prefix) :]
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


@dataclass(frozen=True)
class Subset:
    """Device facts about one subset of the trainable parameters (in parameter order)."""

    index: torch.Tensor
    """(n,) long: the members' parameter indices."""
    groups: torch.Tensor
    """(n,) long: each member's group."""
    group_numel: torch.Tensor
    """(n_groups,) float32: the members' element count per group."""


class Subsets:
    """`Subset`s of the parameters (those a backward reached, those with optimizer state), each built once and
    kept: a tensor made from host data is a host-to-device copy, which synchronises on CUDA. A run meets few
    distinct subsets (all parameters, frozen or unused ones aside)."""

    def __init__(self, params: list[torch.Tensor], group_of: list[int], n_groups: int):
        self._numel = [float(p.numel()) for p in params]
        self._group_of = group_of
        self.n_groups = n_groups
        self._device = params[0].device
        self._cache: dict[tuple, Subset] = {}
        self.all = self(range(len(params)))

    def __call__(self, members) -> Subset:
        key = tuple(members)
        got = self._cache.get(key)
        if got is None:
            groups = torch.tensor([self._group_of[i] for i in key], dtype=torch.long)
            numel = torch.zeros(self.n_groups).index_add_(0, groups, torch.tensor([self._numel[i] for i in key]))
            got = self._cache[key] = Subset(
                torch.tensor(key, dtype=torch.long).to(self._device), groups.to(self._device), numel.to(self._device)
            )
        return got
