"""What each speed switch buys the trainer, and its MFU against a bare loop, interleaved in one process.

    python benchmarks/mfu.py --preset gpt2-117m [--batch 32] [--rounds 3] [--steps 8] [--json FILE]

Sides, each one switch more than the one before: eager attention with foreach AdamW and no compilation
(HF GPT-2's plain path), then SDPA attention, then fused AdamW, then torch.compile of the training forward and
loss (the GPU preset's default); last, a bare loop (no monitor, no schedule) with the same model, compiled
loss, optimizer, batch and length. All sides record with gradvar "paper" (the trainer's default). Rounds
alternate the sides so machine noise hits them alike.

MFU = tokens/s x (6N + 12 L d T) / the chip's dense bf16 peak (trainer.model.PEAK_BF16_FLOPS; NaN on a chip
not listed there, and on CPU). The goal on an H100/H200 is 40%.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import adamw, bare_step, timed, write_json  # noqa: E402
from trainer_throughput import make_trainer  # noqa: E402

from trainer.model import compiled, flops_per_token, mfu, peak_flops  # noqa: E402
from trainer.train import next_token_loss  # noqa: E402


def variants(backend: str) -> dict[str, dict]:
    """Side name -> config overrides, each adding one switch to the one before."""
    plain = {"model.attn": "eager", "optim.fused": False, "model.compile": "off"}
    sdpa = {**plain, "model.attn": "sdpa"}
    fused = {**sdpa, "optim.fused": True}
    return {
        "eager attention": plain,
        "+ sdpa": sdpa,
        "+ fused AdamW": fused,
        f"+ compile ({backend})": {**fused, "model.compile": backend},
    }


def bare_side(trainer, backend: str):
    """A bare loop over a copy of the last trainer's model: same weights, compiled loss, fused AdamW."""
    o = trainer.cfg.optim
    model = copy.deepcopy(trainer.model)
    opt = adamw(trainer.cfg, model)
    loss_fn = compiled(next_token_loss, backend)
    batches = [trainer.sampler.next_batch(o.batch_size) for _ in range(4)]
    if trainer.d.device.type == "cuda":
        batches = [b.pin_memory() for b in batches]
    i = [0]

    def step():
        i[0] += 1
        bare_step(model, opt, batches[i[0] % 4], o.micro_batch_size, o.clip, loss_fn)

    return step


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="gpt2-117m")
    p.add_argument("--batch", type=int, default=32, help="global batch in sequences (0: the preset's)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="timed steps per side per round")
    p.add_argument(
        "--warmup",
        type=int,
        default=31,
        help="untimed steps per side first (compilation, and the probe loss that runs every step up to step 30)",
    )
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled sides")
    p.add_argument("--json", help="append the numbers as one JSON line to this file")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix="gradvar-mfu-")
    trainers = {
        name: make_trainer(args.preset, "paper", out, args.batch, ov)
        for name, ov in variants(args.compile_backend).items()
    }
    last = list(trainers.values())[-1]
    steps = {name: t.train_step for name, t in trainers.items()}
    steps["bare loop (compiled)"] = bare_side(last, args.compile_backend)
    dev = last.d.device
    for fn in steps.values():
        timed(fn, args.warmup, dev)
    totals = dict.fromkeys(steps, 0.0)
    for _ in range(args.rounds):
        for name, fn in steps.items():
            totals[name] += timed(fn, args.steps, dev)
    report(args, last, totals)
    for t in trainers.values():
        t.monitor.close()
    return 0


def report(args, ref, totals: dict) -> None:
    o, dev = ref.cfg.optim, ref.d.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    tokens = args.rounds * args.steps * o.batch_size * o.seq_len
    per_token = flops_per_token(ref.cfg.model, ref.n_params, o.seq_len)
    print(
        f"preset {args.preset} on {name}: batch {o.batch_size} x {o.seq_len}, micro {o.micro_batch_size}, "
        f"{args.rounds} rounds x {args.steps} steps per side after {args.warmup} untimed, torch {torch.__version__}"
    )
    peak = f"{peak_flops(name) / 1e12:.0f} TFLOP/s dense bf16" if peak_flops(name) > 0 else "unknown (no MFU)"
    print(f"  {ref.n_params:,} parameters, {per_token / 1e6:.1f} MFLOP per token, chip peak {peak}")
    rows, prev = {}, None
    for side, sec in totals.items():
        tps = tokens / sec
        util = mfu(tps, ref.cfg.model, ref.n_params, o.seq_len, name)
        bought = "" if prev is None or side.startswith("bare") else f"  x{tps / prev:.3f} over the side above"
        print(f"  {side:<24} {tps:12,.0f} tokens/s  MFU {util:6.1%}{bought}")
        rows[side] = {"tokens_per_s": tps, "mfu": util, "ms_per_step": 1000 * sec / (args.rounds * args.steps)}
        prev = tps
    sides = list(totals)
    ratio = totals[sides[-1]] / totals[sides[-2]]
    print(f"ratio trainer (all switches) / bare loop: {ratio:.3f};  MFU goal >= 40% on an H100/H200")
    write_json(
        args.json,
        {
            "check": "mfu",
            "preset": args.preset,
            "device": name,
            "batch": o.batch_size,
            "seq_len": o.seq_len,
            "micro": o.micro_batch_size,
            "n_params": ref.n_params,
            "flops_per_token": per_token,
            "peak_flops": peak_flops(name),
            "sides": rows,
            "trainer_over_bare": ratio,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
