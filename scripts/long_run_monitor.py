"""Long-run check of gradvar.Monitor: memory, record size and flush time must stay flat over a long run.

Drives the monitor with a fast synthetic loop (a tiny nn.Sequential of two Linear layers, AdamW, two
micro-batches per step so the gradient-variance columns are live) for --steps optimizer steps, and prints
the resident memory (VmRSS), the bytes of records per step and the flush time early versus late in the run.

    python scripts/long_run_monitor.py                  # 200,000 steps
    python scripts/long_run_monitor.py --steps 20000    # what CI runs when the full count is too slow

Exit status 1 if the resident memory grows by more than --max-rss-growth-mb (default 50) between the end
of the warm-up and the end of the run, or if the median flush of the last tenth of the run takes more than
--max-flush-ratio (default 3) times the median flush of the first tenth after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import gradvar


def rss_mb() -> float:
    """Resident set size from /proc/self/status (Linux); falls back to the peak from resource."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--flush-every", type=int, default=50, help="Monitor flush_every (steps)")
    ap.add_argument("--quantities", default="paper", choices=["paper", "full", "minimal"])
    ap.add_argument("--out", help="run directory (default: a temporary one, removed at the end)")
    ap.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    ap.add_argument("--max-flush-ratio", type=float, default=3.0)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xs = torch.randn(64, 16, 32)  # a fixed pool of batches: the loop measures the monitor, not data loading
    ys = xs.sum(-1, keepdim=True).sin()

    tmp = None if args.out else tempfile.TemporaryDirectory()
    run_dir = Path(args.out or tmp.name)
    mon = gradvar.Monitor(
        model, opt, run_dir, args.quantities, flush_every=args.flush_every, handle_sigterm=False, infer_inputs=False
    )
    flushes: list[tuple[int, float]] = []  # (step, seconds)
    real_flush = mon.flush

    def timed_flush():
        t = time.perf_counter()
        real_flush()
        flushes.append((mon.step_num, time.perf_counter() - t))

    mon.flush = timed_flush
    warmup = max(args.steps // 20, 2 * args.flush_every)
    samples = []  # (step, rss MB, records bytes)
    every = max(args.steps // 20, args.flush_every)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        i = step % len(xs)
        x, y = xs[i], ys[i]
        losses = []
        for xm, ym in zip(x.chunk(2), y.chunk(2)):  # two micro-batches: K = 2
            loss = torch.nn.functional.mse_loss(model(xm), ym)
            (loss / 2).backward()
            losses.append(loss.detach())
        mon.clip_grad_norm_(1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        mon.step(loss=losses, seqlen=16, tokens=step * 16, batch_size=16)
        if step == warmup or step % every == 0:
            samples.append((step, rss_mb(), dir_bytes(run_dir / "records")))
    mon.close()
    wall = time.perf_counter() - t0
    samples.append((args.steps, rss_mb(), dir_bytes(run_dir / "records")))

    rows = gradvar.read_records(run_dir, ["steps"])["steps"]
    ok_rows = len(rows) == args.steps and rows["step"].is_unique
    print(
        f"{args.steps:,} steps in {wall:.1f} s ({wall / args.steps * 1e3:.3f} ms/step), "
        f"flush_every {args.flush_every}, "
        f"quantities {args.quantities!r}; steps rows {len(rows):,} (each once: {ok_rows})"
    )
    print(f"{'step':>9} {'RSS MB':>8} {'records MB':>11} {'bytes/step':>11}")
    for s, r, b in samples:
        print(f"{s:>9,} {r:>8.1f} {b / 1e6:>11.2f} {b / s:>11.1f}")

    after_warmup = [(s, t) for s, t in flushes if s > warmup]
    tenth = max(1, len(after_warmup) // 10)
    early = statistics.median(t for _, t in after_warmup[:tenth]) if after_warmup else float("nan")
    late = statistics.median(t for _, t in after_warmup[-tenth:]) if after_warmup else float("nan")
    worst = max(after_warmup, key=lambda st: st[1]) if after_warmup else (0, float("nan"))
    rss_warm = next(r for s, r, _ in samples if s >= warmup)
    growth = samples[-1][1] - rss_warm
    ratio = late / early if early > 0 else float("nan")
    print(
        f"flushes: {len(flushes):,}; median early {early * 1e3:.2f} ms, late {late * 1e3:.2f} ms (x{ratio:.2f}); "
        f"slowest {worst[1] * 1e3:.1f} ms at step {worst[0]:,} (a merge of parts)"
    )
    print(
        f"RSS: {rss_warm:.1f} MB after warm-up (step {warmup:,}) -> {samples[-1][1]:.1f} MB at the end "
        f"({growth:+.1f} MB); records {samples[-1][2] / args.steps:.1f} bytes/step"
    )
    if tmp is not None:
        tmp.cleanup()

    failed = []
    if growth > args.max_rss_growth_mb:
        failed.append(f"memory grew {growth:.1f} MB (> {args.max_rss_growth_mb} MB)")
    if ratio > args.max_flush_ratio:
        failed.append(f"late flushes take {ratio:.2f}x the early ones (> {args.max_flush_ratio}x)")
    if not ok_rows:
        failed.append("the steps table does not hold every step exactly once")
    print("FAIL: " + "; ".join(failed) if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
