"""Unigram and bigram cross-entropies of the validation split: what a model that ignores context (unigram), or
sees only the previous token (bigram), scores on the held-out tokens. Both are fitted on the training split
and evaluated on the validation split, the same tokens the trainer draws its evaluation and probe batches from.

- Unigram: add-one (Laplace) smoothing over the vocabulary, p(b) = (c(b) + 1) / (N + V), so a token never
  seen in training has a finite loss.
- Bigram: Witten-Bell interpolation with that unigram, p(b | a) = (c(a, b) + T(a) p(b)) / (c(a) + T(a)), where
  T(a) is the number of distinct tokens seen after a; p(b | a) = p(b) for an a never seen. It has no tuned
  parameter, so nothing is fitted on the validation split.
The cross-entropy is the mean of -ln p over the validation tokens (the bigram's over every token with a
predecessor, i.e. all but the first).
"""

from __future__ import annotations

import numpy as np


def unigram_probs(train: np.ndarray, vocab: int) -> np.ndarray:
    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab).astype(np.float64)
    return (counts + 1.0) / (counts.sum() + vocab)


def unigram_ce(train: np.ndarray, val: np.ndarray, vocab: int) -> float:
    """Mean -ln p_unigram over the validation tokens, in nats."""
    p = unigram_probs(train, vocab)
    return float(-np.mean(np.log(p[np.asarray(val, dtype=np.int64)])))


def bigram_ce(train: np.ndarray, val: np.ndarray, vocab: int) -> float:
    """Mean -ln p_bigram(val[i] | val[i-1]) over i >= 1, Witten-Bell interpolated with the add-one unigram."""
    train, val = np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64)
    p_uni = unigram_probs(train, vocab)
    pairs, pair_counts = np.unique(train[:-1] * vocab + train[1:], return_counts=True)
    ctx_count = np.bincount(train[:-1], minlength=vocab).astype(np.float64)  # c(a): a followed by something
    types = np.bincount(pairs // vocab, minlength=vocab).astype(np.float64)  # T(a)
    a, b = val[:-1], val[1:]
    idx = np.searchsorted(pairs, a * vocab + b)
    idx_ok = np.minimum(idx, len(pairs) - 1)
    c_ab = np.where((idx < len(pairs)) & (pairs[idx_ok] == a * vocab + b), pair_counts[idx_ok], 0).astype(float)
    denom = ctx_count[a] + types[a]
    seen = denom > 0
    p = np.where(seen, (c_ab + types[a] * p_uni[b]) / np.where(seen, denom, 1.0), p_uni[b])
    return float(-np.mean(np.log(p)))


def reference_losses(data_cfg) -> dict:
    """{"unigram", "bigram", "vocab", "val_tokens", "train_tokens"} of a trainer DataConfig's tokenized
    data (built into its cache like a training run would, if missing)."""
    from trainer.data import prepare

    data = prepare(data_cfg)
    train, val = np.asarray(data.train), np.asarray(data.val)
    return {
        "unigram": unigram_ce(train, val, data.vocab_size),
        "bigram": bigram_ce(train, val, data.vocab_size),
        "vocab": int(data.vocab_size),
        "val_tokens": len(val),
        "train_tokens": len(train),
        "meta": dict(data.meta),
    }
