"""Tokenizers: the official GPT-2 BPE ids, and byte-level BPEs trained on the corpus that round-trip it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.data import prepare, shakespeare_documents
from trainer.recipes import preset
from trainer.tokenizers import EOT, load_tokenizer, train_bpe


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


def test_gpt2_known_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(" Hello") == [18435]  # the leading space is part of the token (no prefix space added)
    assert gpt2.vocab_size == 50257 and gpt2.eot_id == 50256
    assert gpt2.decode([15496, 995]) == "Hello world"


@pytest.mark.parametrize("text", ["Hello world", "  two  spaces\n\nand\ttabs", "naïve café — 日本語 🙂", "", EOT])
def test_gpt2_round_trip(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text


def test_gpt2_identity_is_stable(gpt2):
    assert gpt2.identity == load_tokenizer("gpt2").identity and gpt2.identity.startswith("gpt2:")


@pytest.fixture(scope="module")
def corpus_bpe(data_cache):
    cfg = preset("smoke").data
    cfg.cache_dir = str(data_cache)
    return prepare(cfg)


def test_trained_bpe_round_trips_the_corpus(corpus_bpe):
    """The cached bpe2k tokenizer (trained on the training plays) decodes the first document of each token
    memmap back to that play's text byte for byte, a held-out play included."""
    data, tok = corpus_bpe, corpus_bpe.tokenizer
    assert tok.vocab_size == data.vocab_size <= 2048 and data.meta["tokenizer"] == "bpe2k"
    plays = dict(shakespeare_documents())
    for split, names in ((data.train, data.meta["train_documents"]), (data.val, data.meta["val_documents"])):
        ids = np.asarray(split[:400_000])
        end = int(np.flatnonzero(ids == tok.eot_id)[0])  # documents are joined by <|endoftext|>
        text = tok.decode(ids[:end].tolist())
        assert text == plays[names[0]] and len(text) > 50_000
        assert tok.encode(text) == ids[:end].tolist()


def test_train_bpe_on_small_text(tmp_path):
    texts = ["the cat sat on the mat. " * 50, "naïve café 🙂 — the dog sat. " * 50]
    tok = train_bpe(texts, 300, tmp_path / "tok.json")
    assert tok.vocab_size <= 300 and tok.eot_id is not None
    for t in texts + ["unseen wörds ✓"]:
        assert tok.decode(tok.encode(t)) == t  # byte-level: nothing is out of vocabulary
    assert len(tok.encode(texts[0])) < len(texts[0].encode()) / 3  # it learned merges
    ids = tok.encode_documents(["ab", "cd"])
    assert ids.count(tok.eot_id) == 2 and ids[-1] == tok.eot_id
    reloaded = load_tokenizer("bpe300", tmp_path / "tok.json")
    assert reloaded.identity == tok.identity and reloaded.encode(texts[1]) == tok.encode(texts[1])
    assert json.loads((tmp_path / "tok.json").read_text())["model"]["type"] == "BPE"


def test_missing_tokenizer_file_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="delete the data cache to rebuild it"):
        load_tokenizer("bpe2k", tmp_path / "nope.json")
