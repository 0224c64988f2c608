"""Learning rate: linear warmup over steps, cosine decay over tokens to min_lr (as the paper and
Megatron-DeepSpeed do under SLW, whose steps carry fewer tokens)."""

from __future__ import annotations

import math


def lr_at(step: int, tokens: int, lr: float, min_lr: float, warmup_steps: int, train_tokens: int) -> float:
    """LR for optimizer step `step` (from 1) after `tokens` training tokens were consumed before it."""
    progress = min(max(tokens / train_tokens, 0.0), 1.0)
    decayed = min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    if warmup_steps > 0 and step <= warmup_steps:
        return decayed * step / warmup_steps
    return decayed
