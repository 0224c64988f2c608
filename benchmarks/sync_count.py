"""Host-device synchronisations per training step on a GPU, as torch itself reports them
(`torch.cuda.set_sync_debug_mode`), for the bare loop, the monitor ("paper", "full") and the trainer.

    python benchmarks/sync_count.py [--preset gpt2-117m] [--batch 32] [--steps 5] [--micro K] [--json FILE]

The design wants none from gradvar or the trainer between flushes; transformers' GPT-2 forward makes its
own (counted in the bare loop too). On CPU there is nothing to count: tests/gradvar/test_host_reads.py
checks the same property there by watching for the operations that would sync.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402
from monitor_overhead import setup, stepper  # noqa: E402
from trainer_throughput import make_trainer  # noqa: E402


def count(fn, steps: int) -> tuple[float, collections.Counter]:
    fn()  # layouts and first-step allocations happen once
    where = collections.Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            where[f"{Path(w.filename).name}:{w.lineno}"] += 1
    return sum(where.values()) / steps, where


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="gpt2-117m")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--micro", type=int, default=0, help="micro-batches per step, K (default: the preset's)")
    p.add_argument("--json", help="append the counts as one JSON line to this file")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: sync_count needs CUDA; on CPU run: python -m pytest tests/gradvar/test_host_reads.py")
        return 0
    out = tempfile.mkdtemp(prefix="gradvar-sync-")
    loops = {m: stepper(*setup(args.preset, m, out, "cuda", args.batch, args.micro)) for m in ("none", "paper", "full")}
    micro = {"optim.micro_batch_size": args.batch // args.micro} if args.micro else {}
    for backend in ("off", "inductor"):  # the trainer as it runs eagerly and as the GPU preset runs it
        trainer = make_trainer(args.preset, "paper", out, args.batch, {**micro, "model.compile": backend})
        loops[f"trainer (paper, compile {backend})"] = trainer.train_step
    print(
        f"preset {args.preset}, batch {args.batch}, {args.steps} steps each after one untimed, "
        f"torch {torch.__version__}"
    )
    counts = {}
    for name, fn in loops.items():
        per_step, where = count(fn, args.steps)
        counts[name] = {"per_step": per_step, "where": dict(where)}
        print(f"  {name:<32} {per_step:5.1f} syncs/step  {dict(where.most_common(6))}")
    write_json(
        args.json,
        {"check": "sync_count", "preset": args.preset, "batch": args.batch, "steps": args.steps, "syncs": counts},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
