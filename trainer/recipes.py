"""Named presets: plain functions returning a TrainConfig, each derived by changing a few fields."""

from __future__ import annotations

from .config import ConfigError, TrainConfig


def tiny() -> TrainConfig:
    """CPU: GPT-2 with 4 layers, 4 heads, width 128, context 512, BPE vocab 8192 (1.9 M parameters)."""
    cfg = TrainConfig(name="tiny")
    cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps = 3e-2, 3e-3, 20
    cfg.optim.batch_size, cfg.optim.micro_batch_size, cfg.optim.seq_len = 8, 8, 512
    cfg.optim.train_tokens = 150 * 8 * 512
    cfg.eval.every, cfg.eval.batches = 25, 4
    cfg.checkpoint.every = 50
    return cfg


def gpt2_117m() -> TrainConfig:
    """The paper's GPT-2 small: 12 x 768, context 1024, GPT-2 BPE; Adam (0.9, 0.95), wd 0.01, clip 1.0.
    The paper's baseline: batch 512, LR 6e-4; its SLW runs: 8x batch (4096) and 4x LR (2.4e-3)."""
    cfg = TrainConfig(name="gpt2-117m")
    cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.n_positions = 12, 12, 768, 1024
    cfg.model.dropout = 0.1
    cfg.data.tokenizer = "gpt2"
    o = cfg.optim
    o.lr, o.min_lr, o.warmup_steps, o.seq_len = 6e-4, 6e-5, 3000, 1024
    o.batch_size, o.micro_batch_size, o.train_tokens = 512, 16, 157_000_000_000
    cfg.eval.every, cfg.checkpoint.every, cfg.monitor.flush_every = 1000, 1000, 100
    o.fused = True  # one kernel for the update, and the non-finite skip stays on the device
    cfg.model.compile = "inductor"  # fused kernels for the model and its loss (training forward only)
    cfg.monitor.probe_every = 1000
    return cfg


def gpt2_1_5b() -> TrainConfig:
    """The paper's GPT-2 1.5B: 48 x 1600, 25 heads, context 1024; baseline batch 512, LR 1.5e-4."""
    cfg = gpt2_117m()
    cfg.name = "gpt2-1.5b"
    cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd = 48, 25, 1600
    cfg.optim.lr, cfg.optim.min_lr, cfg.optim.micro_batch_size = 1.5e-4, 1e-5, 4
    cfg.slw.min_seqlen = 64  # the paper's start length at billion scale
    return cfg


def gpt3_125m() -> TrainConfig:
    """The paper's GPT-3 125M: 12 x 768, context 2048; GPT-3 recipe batch 256 x 2048 (0.5M tokens),
    LR 6e-4, 375M-token warmup, 300B tokens; the paper's SLW run: 8x batch and 40x LR."""
    cfg = gpt2_117m()
    cfg.name = "gpt3-125m"
    cfg.model.n_positions, cfg.model.dropout = 2048, 0.0
    o = cfg.optim
    o.seq_len, o.batch_size, o.micro_batch_size, o.warmup_steps = 2048, 256, 8, 715
    o.lr, o.min_lr, o.train_tokens = 6e-4, 6e-5, 300_000_000_000
    return cfg


def smoke() -> TrainConfig:
    """Seconds-long CPU run for tests: 2 layers, width 64, context 128."""
    cfg = tiny()
    cfg.name = "smoke"
    cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.n_positions = 2, 2, 64, 128
    cfg.data.source, cfg.data.tokenizer = "shakespeare", "bpe2k"  # the smaller half: the test suite builds it fast
    o = cfg.optim
    o.seq_len, o.batch_size, o.micro_batch_size, o.train_tokens, o.warmup_steps = 128, 4, 2, 20 * 4 * 128, 5
    o.lr, o.min_lr = 1e-2, 1e-3
    cfg.eval.every, cfg.eval.batches, cfg.checkpoint.every, cfg.monitor.flush_every = 10, 2, 10, 5
    cfg.monitor.probe_every, cfg.monitor.probe_sequences = 10, 4
    return cfg


PRESETS = {"tiny": tiny, "smoke": smoke, "gpt2-117m": gpt2_117m, "gpt2-1.5b": gpt2_1_5b, "gpt3-125m": gpt3_125m}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
