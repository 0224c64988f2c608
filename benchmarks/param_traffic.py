"""Memory traffic and host ops that gradvar adds to a training step: the device-independent part of its cost.

    python benchmarks/param_traffic.py [--preset gpt2-117m] [--micro 1 2 4 8] [--rounds 0]

On a GPU the monitor's work is a handful of multi-tensor kernels per step that stream parameter-sized
buffers (gradients, Adam's state); its cost is about the bytes they move over the memory bandwidth, plus one
kernel launch per op. Both are counted exactly without a GPU (the count is the same on any device):
- `Traffic` (a TorchDispatchMode) adds up the bytes every operation reads and writes, and the operations. A
  monitored step and a bare step run the same model, data and optimizer, so their difference is exactly what
  the monitor adds. It is printed in "parameter passes": one pass reads every parameter's float32 gradient
  once (4 N bytes), and attributed to the gradvar function that asked for it.
- `paper` measures grad_var_max every ELEMENTWISE_EVERY steps: the counted step is one without it, and a
  second count with it at every step gives that step's extra, spread over ELEMENTWISE_EVERY steps in the
  per-step mean.
- With --rounds > 0, host time per step on a model of the preset's shape (same parameter tensors) made so
  narrow that its compute is negligible, bare and monitored steps interleaved.

The bare step is benchmarks/common.bare_step's loop (accumulation, clip_grad_norm_, AdamW with the preset's
fused flag); the monitored one is what monitor_overhead.py times (Monitor.clip_grad_norm_, records every step).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
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
from gradvar import _torch_compat as tc  # noqa: E402
from gradvar import quantities as Q  # noqa: E402
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
    """with Traffic() as t: ...  t.bytes, t.ops; t.by_source / t.ops_by_source: bytes / ops per gradvar function
    that asked."""

    def __init__(self, attribute: bool = False):
        super().__init__()
        self.bytes, self.ops, self.attribute = 0, 0, attribute
        self.by_source: Counter = Counter()
        self.ops_by_source: Counter = Counter()

    def __enter__(self):
        # count what an accelerator runs, not gradvar's CPU-only shortcuts (the same numbers, other kernels)
        self._path = tc.accelerator_path()
        self._path.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        self._path.__exit__(*exc)
        return super().__exit__(*exc)

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
                self.ops_by_source[src] += 1
        return out


def gpt2_like(preset_name: str, width: int = 0):
    """The preset's GPT-2 (vocabulary of GPT-2's BPE); `width` > 0: the same tensors at that width (two heads,
    64 positions, a vocabulary of 128)."""
    cfg = preset(preset_name)
    if width:
        cfg.model.n_embd, cfg.model.n_head, cfg.model.n_positions = width, 2, 64
    torch.manual_seed(0)
    model = build_model(cfg.model, 128 if width else 50257)
    return cfg, model


def make_step(preset_name: str, mode, micro_batches: int, run_dir: Path, width: int = 0, seq: int = 16):
    """monitor_overhead's step (bare or monitored) over fixed random batches of `micro_batches` x 2 sequences.
    mode: "none", a preset's name, or a function of the model's vocabulary size giving a list of quantities."""
    cfg, model = gpt2_like(preset_name, width)
    o = cfg.optim
    o.seq_len, o.micro_batch_size, o.batch_size = seq, 2, 2 * micro_batches
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, model.config.vocab_size, (o.batch_size, seq + 1), generator=g) for _ in range(4)]
    opt = adamw(cfg, model)
    quantities = mode if isinstance(mode, str) else mode()
    mon = (
        None
        if mode == "none"
        else gradvar.Monitor(
            model,
            opt,
            run_dir / (mode if isinstance(mode, str) else "custom"),
            quantities,
            flush_every=10**9,
            handle_sigterm=False,
            notify=lambda *a: None,
        )
    )
    return stepper(cfg, model, opt, batches, mon)


def traffic_per_step(preset_name: str, mode, micro_batches: int, steps: int, attribute=False, width=0) -> Traffic:
    """Traffic of `steps` steps after two untimed ones (Adam's state and the monitor's layouts exist then):
    steps 3, 4, ..., none of which is a `paper` grad_var_max step (1, 21, ...)."""
    with tempfile.TemporaryDirectory() as out:
        step = make_step(preset_name, mode, micro_batches, Path(out), width)
        step(), step()
        with Traffic(attribute) as t:
            for _ in range(steps):
                step()
    return t


def paper_elementwise_every_step() -> list:
    """`paper` with grad_var_max measured at every step: what a `paper` step at ELEMENTWISE_EVERY costs."""
    return [Q.GradVariance(q.schedule) if isinstance(q, Q.GradVariance) else q for q in Q.build("paper")]


@dataclass
class Count:
    """What the monitor adds to one step, in parameter passes and ops; `sampled_passes` / `sampled_ops`: the
    extra of a step that measures grad_var_max (`paper`: one in ELEMENTWISE_EVERY; `full`: already counted)."""

    mode: str
    k: int
    passes: float
    ops: float
    by_source: dict
    ops_by_source: dict
    sampled_passes: float = 0.0
    sampled_ops: float = 0.0

    @property
    def mean_passes(self) -> float:
        """Per step over a run: the grad_var_max step's extra spread over its ELEMENTWISE_EVERY steps."""
        return self.passes + self.sampled_passes / Q.ELEMENTWISE_EVERY

    @property
    def mean_ops(self) -> float:
        return self.ops + self.sampled_ops / Q.ELEMENTWISE_EVERY


def count(preset_name: str, mode: str, micro_batches: int, steps: int = 1, width: int = 0, bare=None) -> Count:
    """The monitor's added passes and ops per step (`bare`: the bare run's Traffic, when already counted)."""
    bare = bare or traffic_per_step(preset_name, "none", micro_batches, steps, width=width)
    n = sum(p.numel() for p in gpt2_like(preset_name, width)[1].parameters())
    mon = traffic_per_step(preset_name, mode, micro_batches, steps, attribute=True, width=width)
    per = lambda b: b / steps / (4 * n)  # noqa: E731
    c = Count(
        mode,
        micro_batches,
        per(mon.bytes - bare.bytes),
        (mon.ops - bare.ops) / steps,
        {src: per(b) for src, b in mon.by_source.items()},
        {src: x / steps for src, x in mon.ops_by_source.items()},
    )
    if mode == "paper" and micro_batches >= 2:  # K = 1: no variance across micro-batches to measure
        every = traffic_per_step(preset_name, paper_elementwise_every_step, micro_batches, steps, width=width)
        c.sampled_passes, c.sampled_ops = per(every.bytes - mon.bytes), (every.ops - mon.ops) / steps
    return c


def host_ms_added(preset_name: str, mode: str, micro_batches: int, rounds: int, steps: int) -> tuple[float, float]:
    """(bare ms/step, monitored ms/step) on the narrow model, interleaved."""
    with tempfile.TemporaryDirectory() as out:
        fns = {m: make_step(preset_name, m, micro_batches, Path(out), width=16) for m in ("none", mode)}
        total = dict.fromkeys(fns, 0.0)
        for fn in fns.values():
            timed(fn, 3)
        for _ in range(rounds):
            for m, fn in fns.items():
                total[m] += timed(fn, steps)
    n = rounds * steps
    return 1000 * total["none"] / n, 1000 * total[mode] / n


BANDWIDTH = {"H100": 3.35, "H200": 4.8}
"""TB/s of HBM: the time a pass takes at peak bandwidth, a lower bound of what the kernels take."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="gpt2-117m")
    p.add_argument("--steps", type=int, default=1, help="counted steps per run")
    p.add_argument("--micro", type=int, nargs="+", default=[1, 2, 4, 8], help="micro-batches per step, K")
    p.add_argument("--modes", nargs="+", default=["paper", "full"])
    p.add_argument("--width", type=int, default=0, help="count on the preset's tensors at this width (0: its own)")
    p.add_argument("--rounds", type=int, default=0, help="host-time rounds (10 steps each); 0: none")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    n = sum(q.numel() for q in gpt2_like(args.preset, args.width)[1].parameters())
    gb = 4 * n / 1e9
    print(
        f"preset {args.preset}{f' at width {args.width}' if args.width else ''}: {n / 1e6:.1f}M parameters, one pass = "
        f"{gb:.2f} GB; torch {torch.__version__}; grad_var_max every {Q.ELEMENTWISE_EVERY} steps in paper"
    )
    ms = lambda passes, tbs: passes * gb / tbs  # noqa: E731  (GB / (TB/s) = ms)
    rows = []
    for k in args.micro:
        bare = traffic_per_step(args.preset, "none", k, args.steps, width=args.width)
        for mode in args.modes:
            c = count(args.preset, mode, k, args.steps, args.width, bare)
            rows.append(c)
            bound = f" (bound {2 * k + 5})" if mode == "paper" else ""
            sampled = (
                f"; at a grad_var_max step +{c.sampled_passes:.2f} passes +{c.sampled_ops:.0f} ops, per-step mean "
                f"{c.mean_passes:.2f} passes {c.mean_ops:.0f} ops"
                if c.sampled_passes
                else ""
            )
            times = ", ".join(f"{ms(c.mean_passes, bw):.2f} ms at {name}" for name, bw in BANDWIDTH.items())
            print(f"{mode:<5} K={k}: +{c.passes:.2f} passes{bound} +{c.ops:.0f} ops per step{sampled}; {times}")
            for src, passes in sorted(c.by_source.items(), key=lambda x: -x[1]):
                if passes >= 0.005 or c.ops_by_source[src] >= 1:
                    print(f"    {passes:5.2f} passes {c.ops_by_source[src]:5.0f} ops  {src}")
            if args.rounds:
                bare_ms, monitored = host_ms_added(args.preset, mode, k, args.rounds, 10)
                print(f"    host time {bare_ms:.1f} -> {monitored:.1f} ms/step (+{monitored - bare_ms:.1f})")
    print(
        "\n| preset | K | passes per step (a grad_var_max step's extra) | per-step mean | ops per step "
        "| ms at H100 | ms at H200 |"
    )
    print("|---|---|---|---|---|---|---|")
    for c in rows:
        extra = f" (+{c.sampled_passes:.1f})" if c.sampled_passes else ""
        print(
            f"| {c.mode} | {c.k} | {c.passes:.1f}{extra} | {c.mean_passes:.1f} | {c.mean_ops:.0f} | "
            f"{ms(c.mean_passes, BANDWIDTH['H100']):.2f} | {ms(c.mean_passes, BANDWIDTH['H200']):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
