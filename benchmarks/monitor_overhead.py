"""Step time of a plain loop with no monitor, with gradvar "paper" every step, "paper" with a TensorBoard sink
(every record also written as TensorBoard scalars), and "full" (probes every 100 steps), interleaved in one
process; plus the peak memory each adds (separate processes).

    python benchmarks/monitor_overhead.py [--preset tiny] [--rounds 4] [--steps 25] [--micro K] [--json FILE]
    python benchmarks/monitor_overhead.py --fsdp        # FSDP2 on 2 CPU ranks: time and collectives added

Budgets: "paper" adds at most 5% step time on the CPU tiny preset, with or without the TensorBoard sink;
"full" with probes every 100 steps at most 15%. On a GPU (gpt2-117m, bf16): "paper" at most 2% (aim 1%),
"full" at most 10%.
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
from common import adamw, autocast, bare_step, peak_memory_mb, print_times, timed, write_json  # noqa: E402

import gradvar  # noqa: E402
from gradvar.sinks import TensorBoardSink  # noqa: E402
from trainer.data import WindowSampler, fixed_windows, prepare  # noqa: E402
from trainer.model import build_model  # noqa: E402
from trainer.recipes import preset  # noqa: E402
from trainer.train import next_token_loss  # noqa: E402


def setup(preset_name: str, mode: str, out: str, device: str, batch: int = 0, micro: int = 0):
    """`micro`: micro-batches per step (K); 0 keeps the preset's micro-batch size."""
    cfg = preset(preset_name)
    if batch:
        cfg.optim.batch_size = batch
        cfg.optim.micro_batch_size = min(cfg.optim.micro_batch_size, batch)
    if micro:
        cfg.optim.micro_batch_size = cfg.optim.batch_size // micro
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
        probes = (
            {"probe_batch": probe, "probe_every": 100, "probe_seqlens": ladder, "loss_fn": loss_fn}
            if mode == "full"
            else {}
        )
        mon = gradvar.Monitor(
            model,
            opt,
            Path(out) / mode,
            mode.removesuffix("_tb"),
            sinks=sinks,
            flush_every=50,
            handle_sigterm=False,
            notify=lambda *a: None,
            **probes,
        )
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
        parts = setup(args.preset, mode, out, args.device, args.batch, args.micro)
        timed(stepper(*parts), 12, args.device)  # past step 1 and a probe at step 1 (full)
        print(json.dumps({"mode": mode, "peak_mb": peak_memory_mb(args.device)}))


def parts_model(args):
    cfg = preset(args.preset)
    return build_model(cfg.model, prepare(cfg.data).vocab_size).parameters()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=0, help="override the preset's global batch (sequences)")
    p.add_argument("--micro", type=int, default=0, help="micro-batches per step, K (default: the preset's)")
    p.add_argument("--json", help="append the numbers as one JSON line to this file")
    p.add_argument(
        "--fsdp", action="store_true", help="FSDP2 on 2 CPU gloo ranks instead (benchmarks/fsdp_overhead.py)"
    )
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.fsdp:
        import fsdp_overhead

        return fsdp_overhead.main(args)
    if args.memory_child:
        memory_child(args, args.memory_child)
        return 0
    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix="gradvar-overhead-")
    modes = ("none", "paper", "paper_tb", "full")
    parts = {m: setup(args.preset, m, out, args.device, args.batch, args.micro) for m in modes}
    steppers = {m: stepper(*parts[m]) for m in modes}
    for fn in steppers.values():
        timed(fn, args.warmup, args.device)
    totals = dict.fromkeys(modes, 0.0)
    for _ in range(args.rounds):
        for m in modes:
            totals[m] += timed(steppers[m], args.steps, args.device)
    n = args.rounds * args.steps
    o = parts["none"][0].optim
    k = o.batch_size // o.micro_batch_size
    print(
        f"preset {args.preset} on {args.device}, batch {o.batch_size} x {o.seq_len}, K = {k} micro-batches per step, "
        f"{n} steps per mode interleaved in {args.rounds} rounds, torch {torch.__version__}"
    )
    print_times(totals, n)
    print(f"overhead paper: {totals['paper'] / totals['none'] - 1:+.1%} (budget +5%)")
    print(f"overhead paper + TensorBoard sink: {totals['paper_tb'] / totals['none'] - 1:+.1%} (budget +5%)")
    print(f"overhead full (probes every 100 steps): {totals['full'] / totals['none'] - 1:+.1%} (budget +15%)")
    mem = {}
    for m in modes:
        res = subprocess.run(
            [
                sys.executable,
                __file__,
                "--preset",
                args.preset,
                "--device",
                args.device,
                "--batch",
                str(args.batch),
                "--micro",
                str(args.micro),
                "--memory-child",
                m,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        mem[m] = json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"]
    kind = "GPU memory allocated" if args.device.startswith("cuda") else "RSS"
    print(
        f"peak {kind}: none {mem['none']:.0f} MB, paper {mem['paper']:.0f} MB (+{mem['paper'] - mem['none']:.0f}), "
        f"full {mem['full']:.0f} MB (+{mem['full'] - mem['none']:.0f})"
    )
    n_params = sum(p.numel() for p in parts_model(args))
    print(
        f"monitor buffers by design: element-wise second moment {4 * n_params / 2**20:.0f} MB (paper, full); "
        f"parameter snapshot {4 * n_params / 2**20:.0f} MB (full, update size)"
    )
    write_json(
        args.json,
        {
            "check": "monitor_overhead",
            "preset": args.preset,
            "device": args.device,
            "k": k,
            "batch": o.batch_size,
            "seq_len": o.seq_len,
            "steps_per_mode": n,
            "ms_per_step": {m: 1000 * totals[m] / n for m in modes},
            "overhead": {m: totals[m] / totals["none"] - 1 for m in ("paper", "full")},
            "peak_mb": mem,
            "peak_mb_added": {m: mem[m] - mem["none"] for m in ("paper", "full")},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
