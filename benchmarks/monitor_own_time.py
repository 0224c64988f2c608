"""Time spent inside gradvar per step, measured in the process: every hook the monitor registers (they all call
through gradvar.hooks.WeakHook), Monitor.clip_grad_norm_ and Monitor.step, beside the step time of the monitored
loop and the time of torch's clipping in the plain loop it replaces. Wall-clock overheads on a shared CPU carry
the machine's noise (benchmarks/monitor_overhead.py prints its floor); this is the monitor's own share.

    python benchmarks/monitor_own_time.py [--preset tiny] [--micro 4] [--steps 50] [--mode paper|paper_tb|full]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import monitor_overhead as mo  # noqa: E402

import gradvar  # noqa: E402
from gradvar import capture, hooks  # noqa: E402
from gradvar.sinks.base import Sink  # noqa: E402

SPENT: dict[str, float] = {}
PART = "  of which the sinks"
"""Time inside Monitor.step spent writing to the sinks (`paper_tb`): printed, not added to the total twice."""


def _timed(fn, key: str):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[key] = SPENT.get(key, 0.0) + time.perf_counter() - start

    return wrapper


def _instrument() -> None:
    """Count the outermost gradvar call only: a hook that calls the monitor's methods is one entry."""
    depth = [0]

    def timed_call(call):
        def weak_call(self, *args, **kwargs):
            depth[0] += 1
            start = time.perf_counter()
            try:
                return call(self, *args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    key = f"hook {self._name}"
                    SPENT[key] = SPENT.get(key, 0.0) + time.perf_counter() - start

        return weak_call

    for cls in (hooks.WeakHook, capture.GradHook):  # GradCapture's per-parameter hook has its own __call__
        cls.__call__ = timed_call(cls.__call__)
    gradvar.Monitor.step = _timed(gradvar.Monitor.step, "Monitor.step")
    gradvar.Monitor.clip_grad_norm_ = _timed(gradvar.Monitor.clip_grad_norm_, "Monitor.clip_grad_norm_")
    torch.nn.utils.clip_grad_norm_ = _timed(torch.nn.utils.clip_grad_norm_, "torch clip (plain loop)")
    Sink.write = _timed(Sink.write, PART)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--micro", type=int, default=4, help="micro-batches per step, K")
    p.add_argument(
        "--steps",
        type=int,
        default=50,
        help="timed steps per loop; 50 include one flush of the records (every 50 steps)",
    )
    p.add_argument(
        "--mode",
        default="paper",
        choices=("paper", "paper_tb", "full"),
        help="paper_tb: with a TensorBoard sink (its share printed apart); full: its ordinary steps (probes every 100)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    _instrument()
    out = tempfile.mkdtemp(prefix="gradvar-own-time-")
    # warmup=0: "full" runs its steps 100 and 101 (the probes) in the two untimed steps below
    arms = {m: mo.stepper(*mo.setup(args.preset, m, out, "cpu", 0, args.micro, warmup=0)) for m in ("none", args.mode)}
    for fn in arms.values():
        for _ in range(2):
            fn()
    SPENT.clear()
    step = dict.fromkeys(arms, 0.0)
    for i in range(args.steps):
        for m in arms if i % 2 == 0 else list(arms)[::-1]:
            start = time.perf_counter()
            arms[m]()
            step[m] += time.perf_counter() - start
    n = args.steps
    print(f"preset {args.preset}, K = {args.micro}, {n} steps per loop, torch {torch.__version__}")
    for key, v in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        if key != PART:
            print(f"  {key:<28} {1000 * v / n:7.2f} ms/step")
        if key == "Monitor.step" and PART in SPENT:
            print(f"  {PART:<28} {1000 * SPENT[PART] / n:7.2f} ms/step")
    own = sum(v for k, v in SPENT.items() if not k.startswith("torch") and k != PART)
    clip = SPENT.get("torch clip (plain loop)", 0.0)
    paper = step[args.mode] / n
    print(
        f"{args.mode} step {1000 * paper:.1f} ms, plain step {1000 * step['none'] / n:.1f} ms; inside gradvar "
        f"{1000 * own / n:.1f} ms/step ({own / n / paper:.1%} of the step), less the plain loop's clipping "
        f"{1000 * clip / n:.1f} ms: {(own - clip) / n / paper:.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
