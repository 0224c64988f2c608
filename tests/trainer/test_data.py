"""Data: the token cache, whole-document held-out split, the window sampler and its saved state, and SLW
truncation inside the trainer (tokens per step = batch x seqlen_t; recorded seqlen follows the schedule)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import trainer.train as train_mod
from trainer.config import DataConfig, slw_schedule
from trainer.data import DataError, WindowSampler, fixed_windows, prepare, split_documents
from trainer.recipes import preset


@pytest.fixture(scope="module")
def data(data_cache):
    cfg = preset("smoke").data
    cfg.cache_dir = str(data_cache)
    return prepare(cfg)


def test_cache_is_reused_and_described(data, data_cache):
    assert len(list(data_cache.iterdir())) == 1  # one folder per (source, tokenizer, val_fraction)
    again = prepare(DataConfig(source="shakespeare", tokenizer="bpe2k", cache_dir=str(data_cache)))
    assert np.array_equal(again.val, data.val) and again.meta == data.meta
    m = data.meta
    assert m["train_tokens"] == len(data.train) and m["val_tokens"] == len(data.val)
    assert data.train.dtype == np.uint16 and int(data.train.max()) < data.vocab_size
    assert 0.01 < len(data.val) / (len(data.train) + len(data.val)) < 0.15


def test_whole_documents_are_held_out(data):
    assert set(data.meta["train_documents"]).isdisjoint(data.meta["val_documents"])
    train, val = split_documents([(f"d{i}", "x") for i in range(40)], 0.05)
    assert len(val) == 2 and len(train) == 38
    train, val = split_documents([("one", "a" * 100)], 0.1)  # a single document: head / tail
    assert train[0][1] == "a" * 90 and val[0][1] == "a" * 10


def test_sampler_is_deterministic_and_resumable(data):
    a, b = WindowSampler(data.train, 128, seed=0), WindowSampler(data.train, 128, seed=0)
    x = a.next_batch(4)
    assert x.shape == (4, 129) and x.dtype == torch.int64 and torch.equal(x, b.next_batch(4))
    assert not torch.equal(x, WindowSampler(data.train, 128, seed=1).next_batch(4))
    state = a.state_dict()
    expected = [a.next_batch(4) for _ in range(3)]
    c = WindowSampler(data.train, 128, seed=99)
    c.load_state_dict(state)
    assert all(torch.equal(e, c.next_batch(4)) for e in expected)
    b.skip(3, 4)
    assert torch.equal(a.next_batch(4), b.next_batch(4))


def test_windows_are_contiguous_corpus_slices(data):
    x = WindowSampler(data.train, 64, seed=3).next_batch(2)
    corpus = np.asarray(data.train, dtype=np.int64)
    for row in x.numpy():
        starts = np.flatnonzero(corpus[: len(corpus) - 64] == row[0])
        assert any(np.array_equal(corpus[s : s + 65], row) for s in starts)


def test_fixed_windows_are_fixed(data):
    a = fixed_windows(data.val, 4, 129)
    assert a.shape == (4, 129) and torch.equal(a, fixed_windows(data.val, 4, 129))
    assert not torch.equal(a, fixed_windows(data.val, 4, 129, offset=0.5))  # the probe set differs from eval


def test_data_errors():
    with pytest.raises(DataError, match="fewer than one sequence"):
        WindowSampler(np.zeros(10, np.uint16), 128, 0)
    with pytest.raises(DataError, match="no such file or folder"):
        prepare(DataConfig(source="/nonexistent/corpus.txt"))
    with pytest.raises(DataError, match="data.tokenizer must be"):
        from trainer.data import _bpe_size

        _bpe_size("wordpiece")


def test_slw_truncates_inside_the_trainer(smoke, tmp_path, monkeypatch):
    """Each sample is cut to its first seqlen_t (+1 label) tokens; tokens per step are batch x seqlen_t."""
    seen = []
    real = train_mod.next_token_loss

    def spy(model, x):
        if model.training:
            seen.append(tuple(x.shape))
        return real(model, x)

    monkeypatch.setattr(train_mod, "next_token_loss", spy)
    cfg = smoke.cfg(
        tmp_path,
        "slw",
        {
            "slw.enabled": True,
            "slw.min_seqlen": 8,
            "slw.total_steps": 10,
            "slw.difficulty_step": 8,
            "optim.max_steps": 12,
            "eval.every": 0,
            "checkpoint.every": 0,
            "monitor.probe_loss_every": 1000,
        },
    )
    smoke.train(cfg)
    sched = slw_schedule(cfg)
    expected = [sched.seqlen(t) for t in range(1, 13)]
    # DeepSpeed: floor(1/10 * 120 + 8) -> 16
    assert expected[0] == 16 and expected[-1] == 128 and len(set(expected)) > 5
    o = cfg.optim
    micro_per_step = o.batch_size // o.micro_batch_size
    assert seen == [(o.micro_batch_size, s + 1) for s in expected for _ in range(micro_per_step)]
    steps = smoke.steps(cfg.run_dir)
    assert list(steps["seqlen"]) == expected
    assert list(np.diff(steps["tokens"], prepend=0)) == [o.batch_size * s for s in expected]
    assert (steps["batch_size"] == o.batch_size).all()


def test_kjv_books_are_documents():
    from trainer.data import kjv_documents

    docs = kjv_documents()
    assert len(docs) == 66
    assert docs[0][0] == "kjv/01-genesis" and "In the beginning God created" in docs[0][1][:200]
    assert docs[-1][0] == "kjv/66-revelation" and docs[-1][1].rstrip().endswith("Amen.")
    assert not any("[" in t or "]" in t for _, t in docs)


def test_default_source_holds_out_whole_plays_and_books(tmp_path):
    from trainer.config import DataConfig
    from trainer.data import embedded_documents, split_documents

    cfg = DataConfig()
    assert cfg.source == "shakespeare+kjv"
    docs = embedded_documents(cfg.source)
    train, val = split_documents(docs, cfg.val_fraction)
    names = {n for n, _ in val}
    assert any(n.startswith("kjv/") for n in names) and any(not n.startswith("kjv/") for n in names)
    assert not names & {n for n, _ in train}
    assert len(docs) == len(embedded_documents("shakespeare")) + 66
