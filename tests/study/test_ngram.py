"""Unigram and bigram cross-entropies against a hand count on a tiny corpus, and on the trainer's real data."""

import math

import numpy as np
import pytest

from study.stats.ngram import bigram_ce, reference_losses, unigram_ce


def test_unigram_and_bigram_by_hand():
    # vocabulary {0, 1, 2, 3}; training tokens 0 1 0 1 2: counts 0:2 1:2 2:1 3:0, N = 5
    train, val, V = np.array([0, 1, 0, 1, 2]), np.array([0, 1, 3]), 4
    p = {0: 3 / 9, 1: 3 / 9, 2: 2 / 9, 3: 1 / 9}  # add-one: (c + 1) / (5 + 4)
    assert unigram_ce(train, val, V) == pytest.approx(-(math.log(p[0]) + math.log(p[1]) + math.log(p[3])) / 3)
    # pairs: (0,1) x2, (1,0) x1, (1,2) x1. c(0) = 2, T(0) = 1; c(1) = 2, T(1) = 2
    p_1_after_0 = (2 + 1 * p[1]) / (2 + 1)
    p_3_after_1 = (0 + 2 * p[3]) / (2 + 2)
    assert bigram_ce(train, val, V) == pytest.approx(-(math.log(p_1_after_0) + math.log(p_3_after_1)) / 2)
    # a context never seen in training (3) falls back to the unigram
    assert bigram_ce(train, np.array([3, 0]), V) == pytest.approx(-math.log(p[0]))


def test_reference_losses_on_the_trainers_data(data_cache):
    from trainer.recipes import smoke

    cfg = smoke().data
    cfg.cache_dir = str(data_cache)
    ref = reference_losses(cfg)
    assert 0 < ref["bigram"] < ref["unigram"] < math.log(ref["vocab"])  # context helps; frequencies beat uniform
    assert ref["val_tokens"] > 1000 and ref["vocab"] == 2048
