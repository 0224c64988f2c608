"""Memory traffic and host time that gradvar adds to a training step: the device-independent part of its cost.

    python benchmarks/param_traffic.py [--preset gpt2-117m] [--steps 3]

On a GPU the monitor's work is a handful of multi-tensor kernels per step that stream parameter-sized
buffers (gradients, Adam's state); its cost is about the bytes they move over the memory bandwidth, plus the
host time of its Python if that ever exceeds the GPU's step. Both can be measured without a GPU:
- `Traffic` (a TorchDispatchMode) adds up the bytes every operation reads and writes. A monitored step and a
  bare step run the same model, data and optimizer, so their difference is exactly what the monitor adds.
  It is printed in "parameter passes": one pass reads every parameter's float32 gradient once (4 N bytes).
- Host time per step is measured on a model of the preset's shape (same parameter tensors) made so narrow
  that its compute is negligible, bare and monitored steps interleaved.

The bare step is benchmarks/common.bare_step's loop (accumulation, clip_grad_norm_, AdamW with the preset's
fused flag); the monitored one is what monitor_overhead.py times (Monitor.clip_grad_norm_, records every step).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import adamw, timed  # noqa: E402
from monitor_overhead import stepper  # noqa: E402

import gradvar  # noqa: E402
from trainer.model import build_model  # noqa: E402
from trainer.recipes import preset  # noqa: E402

GRADVAR = str(ROOT / "gradvar") + "/"
NO_READ = ("aten.copy_.", "aten.zero_.", "aten.fill_.", "aten._foreach_copy_.", "aten._foreach_zero_.")
"""Ops whose first argument is only written."""


def _bytes(values) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(values) if isinstance(t, torch.Tensor))


def _gradvar_line() -> str | None:
    """file:line of the innermost gradvar frame on the stack (who asked for this op), or None."""
    f = sys._getframe(2)
    while f is not None:
        if f.f_code.co_filename.startswith(GRADVAR):
            return f"{Path(f.f_code.co_filename).relative_to(ROOT)}:{f.f_code.co_name}"
        f = f.f_back
    return None


class Traffic(TorchDispatchMode):
    """with Traffic() as t: ...  t.bytes, t.ops; t.by_source: bytes per gradvar function that asked."""

    def __init__(self, attribute: bool = False):
        super().__init__()
        self.bytes, self.ops, self.attribute = 0, 0, attribute
        self.by_source: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func)
        if func.is_view or name.startswith(("aten.empty", "aten.detach", "aten.alias")):
            return out  # allocation and aliasing move no data
        read = _bytes(args[1:] if name.startswith(NO_READ) else args) + _bytes(kwargs)
        written = _bytes(out)
        if not written and func._schema.is_mutable:  # in-place foreach ops return nothing: count what they write
            written = sum(
                _bytes(a)
                for a, spec in zip(args, func._schema.arguments)
                if spec.alias_info is not None and spec.alias_info.is_write
            )
        moved = read + written
        self.bytes += moved
        self.ops += 1
        if self.attribute:
            src = _gradvar_line()
            if src is not None:
                self.by_source[src] += moved
        return out


def gpt2_like(preset_name: str, narrow: bool):
    """The preset's GPT-2 (vocabulary of GPT-2's BPE); `narrow`: the same tensors at width 16."""
    cfg = preset(preset_name)
    if narrow:
        cfg.model.n_embd, cfg.model.n_head, cfg.model.n_positions = 16, 2, 64
    torch.manual_seed(0)
    model = build_model(cfg.model, 50257 if not narrow else 128)
    return cfg, model


def make_step(preset_name: str, mode: str, micro_batches: int, run_dir: Path, narrow: bool = False, seq: int = 16):
    """monitor_overhead's step (bare or monitored) over fixed random batches of `micro_batches` x 2 sequences."""
    cfg, model = gpt2_like(preset_name, narrow)
    o = cfg.optim
    o.seq_len, o.micro_batch_size, o.batch_size = seq, 2, 2 * micro_batches
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, model.config.vocab_size, (o.batch_size, seq + 1), generator=g) for _ in range(4)]
    opt = adamw(cfg, model)
    mon = (
        None
        if mode == "none"
        else gradvar.Monitor(
            model, opt, run_dir / mode, mode, flush_every=10**9, handle_sigterm=False, notify=lambda *a: None
        )
    )
    return stepper(cfg, model, opt, batches, mon)


def traffic_per_step(preset_name: str, mode: str, micro_batches: int, steps: int, attribute=False) -> Traffic:
    """Traffic of `steps` steps after two untimed ones (Adam's state and the monitor's layouts exist then)."""
    with tempfile.TemporaryDirectory() as out:
        step = make_step(preset_name, mode, micro_batches, Path(out))
        step(), step()
        with Traffic(attribute) as t:
            for _ in range(steps):
                step()
    return t


def added_passes(preset_name: str, mode: str, micro_batches: int, steps: int = 1) -> tuple[float, float, Traffic]:
    """(parameter passes added per step, ops added per step, the monitored run's Traffic)."""
    bare = traffic_per_step(preset_name, "none", micro_batches, steps)
    mon = traffic_per_step(preset_name, mode, micro_batches, steps, attribute=True)
    n = sum(p.numel() for p in gpt2_like(preset_name, narrow=False)[1].parameters())
    return (mon.bytes - bare.bytes) / steps / (4 * n), (mon.ops - bare.ops) / steps, mon


def host_ms_added(preset_name: str, mode: str, micro_batches: int, rounds: int, steps: int) -> tuple[float, float]:
    """(bare ms/step, monitored ms/step) on the narrow model, interleaved."""
    with tempfile.TemporaryDirectory() as out:
        fns = {m: make_step(preset_name, m, micro_batches, Path(out), narrow=True) for m in ("none", mode)}
        total = dict.fromkeys(fns, 0.0)
        for fn in fns.values():
            timed(fn, 3)
        for _ in range(rounds):
            for m, fn in fns.items():
                total[m] += timed(fn, steps)
    n = rounds * steps
    return 1000 * total["none"] / n, 1000 * total[mode] / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="gpt2-117m")
    p.add_argument("--steps", type=int, default=2, help="counted steps per run")
    p.add_argument("--rounds", type=int, default=8, help="host-time rounds (10 steps each)")
    p.add_argument("--bandwidth", type=float, default=4.8, help="TB/s, for the time the traffic takes at peak")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    n = sum(q.numel() for q in gpt2_like(args.preset, narrow=False)[1].parameters())
    print(
        f"preset {args.preset}: {n / 1e6:.1f}M parameters, one pass = {4 * n / 1e9:.2f} GB; torch {torch.__version__}"
    )
    for mode in ("paper", "full"):
        for k in (1, 2):
            passes, ops, mon = added_passes(args.preset, mode, k, args.steps)
            ms = passes * 4 * n / (args.bandwidth * 1e12) * 1e3
            bare, monitored = host_ms_added(args.preset, mode, k, args.rounds, 10)
            print(
                f"{mode:<5} K={k}: +{passes:.2f} parameter passes/step (+{passes * 4 * n / 1e9:.2f} GB, "
                f"{ms:.2f} ms at {args.bandwidth} TB/s), +{ops:.0f} ops/step; host time "
                f"{bare:.1f} -> {monitored:.1f} ms/step (+{monitored - bare:.1f})"
            )
            for src, b in mon.by_source.most_common(6):
                print(f"    {b / args.steps / (4 * n):5.2f} passes  {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
