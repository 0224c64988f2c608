"""Step time of a plain loop with no monitor, with gradvar "paper" every step, "paper" with a TensorBoard sink
(every record also written as TensorBoard scalars), and "full" (probes every 100 steps), interleaved in one
process; plus the peak memory each adds (separate processes).

    python benchmarks/monitor_overhead.py [--preset tiny] [--rounds 4] [--steps 25]

Goals: "paper" adds at most 5% step time on the CPU tiny preset, with or without the TensorBoard sink;
"full" with probes every 100 steps at most 15%.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import adamw, autocast, bare_step, peak_memory_mb, timed  # noqa: E402

import gradvar  # noqa: E402
from gradvar.sinks import TensorBoardSink  # noqa: E402
from trainer.data import WindowSampler, fixed_windows, prepare  # noqa: E402
from trainer.model import build_model  # noqa: E402
from trainer.recipes import preset  # noqa: E402
from trainer.train import next_token_loss  # noqa: E402


def setup(preset_name: str, mode: str, out: str, device: str, batch: int = 0):
    cfg = preset(preset_name)
    if batch:
        cfg.optim.batch_size = batch
        cfg.optim.micro_batch_size = min(cfg.optim.micro_batch_size, batch)
    data = prepare(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.vocab_size).to(device)
    o = cfg.optim
    opt = adamw(cfg, model)
    sampler = WindowSampler(data.train, o.seq_len, 0)
    batches = [sampler.next_batch(o.batch_size).to(device) for _ in range(4)]
    mon = None
    if mode != "none":
        probe = fixed_windows(data.val, 4, o.seq_len + 1).to(device)
        ladder = [n + 1 for n in (16, 32, 64, 128, 256) if n < o.seq_len] + [o.seq_len + 1]
        def loss_fn(m, x):
            with autocast(device):
                return next_token_loss(m, x)
        sinks = [TensorBoardSink(Path(out) / mode / "tensorboard")] if mode == "paper_tb" else []
        probes = dict(probe_batch=probe, probe_every=100, probe_seqlens=ladder, loss_fn=loss_fn) if mode == "full" else {}
        mon = gradvar.Monitor(model, opt, Path(out) / mode, mode.removesuffix("_tb"), sinks=sinks, flush_every=50,
                              handle_sigterm=False, notify=lambda *a: None, **probes)
    return cfg, model, opt, batches, mon


def stepper(cfg, model, opt, batches, mon):
    i = [0]
    o = cfg.optim

    def step():
        i[0] += 1
        batch = batches[i[0] % 4]
        if mon is None:
            return bare_step(model, opt, batch, o.micro_batch_size, o.clip)
        losses = []
        for mb in batch.split(o.micro_batch_size):
            with autocast(batch.device):
                loss = next_token_loss(model, mb)
            (loss / (o.batch_size // o.micro_batch_size)).backward()
            losses.append(loss.detach())
        mon.clip_grad_norm_(o.clip)
        opt.step()
        mon.step(loss=losses, seqlen=o.seq_len, batch_size=o.batch_size)
        opt.zero_grad(set_to_none=True)
    return step


def memory_child(args, mode: str) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        parts = setup(args.preset, mode, out, args.device, args.batch)
        timed(stepper(*parts), 12, args.device)  # past step 1 and a probe at step 1 (full)
        print(json.dumps({"mode": mode, "peak_mb": peak_memory_mb(args.device)}))


def parts_model(args):
    cfg = preset(args.preset)
    return build_model(cfg.model, prepare(cfg.data).vocab_size).parameters()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=0, help="override the preset's global batch (sequences)")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(args, args.memory_child)
        return 0
    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix="gradvar-overhead-")
    modes = ("none", "paper", "paper_tb", "full")
    steppers = {m: stepper(*setup(args.preset, m, out, args.device, args.batch)) for m in modes}
    for fn in steppers.values():
        timed(fn, args.warmup, args.device)
    totals = dict.fromkeys(modes, 0.0)
    for _ in range(args.rounds):
        for m in modes:
            totals[m] += timed(steppers[m], args.steps, args.device)
    n = args.rounds * args.steps
    print(f"preset {args.preset} on {args.device}, {n} steps per mode interleaved in {args.rounds} rounds, "
          f"torch {torch.__version__}")
    for m in modes:
        print(f"  {m:<6} {1000 * totals[m] / n:8.1f} ms/step")
    print(f"overhead paper: {totals['paper'] / totals['none'] - 1:+.1%} (goal <= +5%)")
    print(f"overhead paper + TensorBoard sink: {totals['paper_tb'] / totals['none'] - 1:+.1%} (goal <= +5%)")
    print(f"overhead full (probes every 100 steps): {totals['full'] / totals['none'] - 1:+.1%} (goal <= +15%)")
    mem = {}
    for m in modes:
        res = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--device", args.device,
                              "--batch", str(args.batch), "--memory-child", m], capture_output=True, text=True, check=True)
        mem[m] = json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"]
    kind = "GPU memory allocated" if args.device.startswith("cuda") else "RSS"
    print(f"peak {kind}: none {mem['none']:.0f} MB, paper {mem['paper']:.0f} MB (+{mem['paper'] - mem['none']:.0f}), "
          f"full {mem['full']:.0f} MB (+{mem['full'] - mem['none']:.0f})")
    n_params = sum(p.numel() for p in parts_model(args))
    print(f"monitor buffers by design: element-wise second moment {4 * n_params / 2**20:.0f} MB (paper, full); "
          f"parameter snapshot {4 * n_params / 2**20:.0f} MB (full, update size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
