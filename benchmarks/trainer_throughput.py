"""Tokens/s of the gradvar trainer against a bare reference loop, interleaved in one process.

    python benchmarks/trainer_throughput.py [--preset tiny] [--rounds 5] [--steps 8]

Both sides use the same HF GPT-2, AdamW, global batch, micro-batch and sequence length, one thread. The
trainer runs with its defaults (gradvar "paper" records every step, clipping, LR schedule, checkpoints off
for the timing) and with records reduced to the loss ("minimal"). Rounds alternate so machine noise hits
both sides alike; the ratio of total tokens/s is printed.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import adamw, bare_step, timed  # noqa: E402

from trainer.config import apply_overrides  # noqa: E402
from trainer.recipes import preset  # noqa: E402
from trainer.train import Trainer  # noqa: E402


def make_trainer(name, quantities, out, batch=0, overrides=None):
    """A Trainer of preset `name` for timing: no evaluation, no checkpoints, an endless token budget."""
    cfg = apply_overrides(preset(name), overrides or {})
    if batch:
        cfg.optim.batch_size, cfg.optim.micro_batch_size = batch, min(cfg.optim.micro_batch_size, batch)
    cfg.name, cfg.out_dir = f"bench-{quantities}-{len(list(Path(out).glob('bench-*')))}", out
    cfg.monitor.quantities = quantities
    cfg.eval.every, cfg.checkpoint.every = 0, 0
    cfg.optim.train_tokens = 10**12
    cfg.threads = 1
    t = Trainer(cfg)
    t.model.train()
    return t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=8, help="steps per side per round")
    p.add_argument("--batch", type=int, default=0, help="override the preset's global batch (sequences)")
    p.add_argument(
        "--warmup",
        type=int,
        default=31,
        help="untimed steps first: the probe loss runs every step up to step 30 (spikes come early), "
        "every 5 after; the default times the steady state",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix="gradvar-bench-")
    trainers = {q: make_trainer(args.preset, q, out, args.batch) for q in ("paper", "minimal")}
    ref = trainers["paper"]
    o = ref.cfg.optim
    model = copy.deepcopy(ref.model)
    opt = adamw(ref.cfg, model)
    batches = [ref.sampler.next_batch(o.batch_size) for _ in range(4)]
    i = [0]

    def bare():
        i[0] += 1
        bare_step(model, opt, batches[i[0] % 4], o.micro_batch_size, o.clip)

    dev = ref.d.device
    timed(bare, 2, dev)
    for t in trainers.values():
        timed(t.train_step, args.warmup, dev)
    totals = {"bare": 0.0, "paper": 0.0, "minimal": 0.0}
    for _ in range(args.rounds):
        totals["bare"] += timed(bare, args.steps, dev)
        for q, t in trainers.items():
            totals[q] += timed(t.train_step, args.steps, dev)
    tokens = args.rounds * args.steps * o.batch_size * o.seq_len
    print(
        f"preset {args.preset} on {dev}: batch {o.batch_size} x {o.seq_len}, micro {o.micro_batch_size}, "
        f"{args.rounds} rounds x {args.steps} steps per side after {args.warmup} untimed, torch {torch.__version__}"
    )
    for name, sec in totals.items():
        print(f"  {name:<22} {tokens / sec:10,.0f} tokens/s")
    for q in ("paper", "minimal"):
        print(f"ratio trainer({q}) / bare loop: {totals['bare'] / totals[q]:.3f}")
    for t in trainers.values():
        t.monitor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
