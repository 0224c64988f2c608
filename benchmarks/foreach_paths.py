"""Time of the multi-tensor reductions the monitor runs each step, on gpt2-117m's parameter shapes.

    python benchmarks/foreach_paths.py [--preset gpt2-117m] [--calls 20] [--rounds 5]

On CUDA `torch._foreach_norm` has a multi-tensor kernel for the L1, L2 and inf norms only. Any other order
falls back to one kernel per tensor (148 for GPT-2), and on CPU the inf and -inf orders are 7-10x slower
than a max or min reduction. Adam's v minimum and maximum come from one aminmax per tensor (no multi-tensor
min exists; one read of v for both, where a multi-tensor max would read v again), and the non-finite gradient
count (the L0 "norm" of g * 0) launches one kernel per tensor on CUDA. benchmarks/param_traffic.py counts
their bytes and ops; this script times each reduction beside its alternatives, so that the choice on a GPU
rests on measured times.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import sync  # noqa: E402
from param_traffic import gpt2_like  # noqa: E402

CANDIDATES = {
    "L2 norm (reference: one multi-tensor pass)": lambda vs: torch._foreach_norm(vs),
    "min and max of v: aminmax per tensor (in use)": lambda vs: [torch.stack(m) for m in zip(*map(torch.aminmax, vs))],
    "max of v: _foreach_max (before, beside amin)": lambda vs: torch._foreach_max(vs),
    "max of v: inf norm": lambda vs: torch._foreach_norm(vs, math.inf),
    "min of v: amin per tensor (before, beside _foreach_max)": lambda vs: torch.stack([v.amin() for v in vs]),
    "min of v: -inf norm (before)": lambda vs: torch._foreach_norm(vs, -math.inf),
    "min of v: -max(-v) (multi-tensor alternative)": lambda vs: torch._foreach_max(torch._foreach_neg(vs)),
    "non-finite count: L0 of g*0 (in use)": lambda vs: torch._foreach_norm(torch._foreach_mul(vs, 0.0), 0),
    "non-finite flag per tensor from the L2 norms (alternative)": lambda vs: torch.stack(
        torch._foreach_norm(vs)
    ).isfinite(),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="gpt2-117m")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    _, model = gpt2_like(args.preset)
    vs = [torch.rand_like(q, device=args.device) for q in model.parameters()]
    del model
    total = dict.fromkeys(CANDIDATES, 0.0)
    for fn in CANDIDATES.values():
        fn(vs)  # warm-up: allocations, kernel loading
    for _ in range(args.rounds):
        for name, fn in CANDIDATES.items():
            sync(args.device)
            t = time.perf_counter()
            for _ in range(args.calls):
                fn(vs)
            sync(args.device)
            total[name] += time.perf_counter() - t
    n = args.rounds * args.calls
    print(
        f"{len(vs)} tensors, {sum(v.numel() for v in vs) / 1e6:.1f}M elements on {args.device}, "
        f"torch {torch.__version__}"
    )
    for name, secs in total.items():
        print(f"  {1000 * secs / n:8.3f} ms  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
