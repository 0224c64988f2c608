"""Step time of a plain loop with no monitor, with gradvar "paper", "paper" with a TensorBoard sink (every record
also written as TensorBoard scalars), and "full" with both probes every 100 steps, one step of each loop in turn in
one process, beside a second plain loop (the A/A control: the noise floor of the run); plus the peak memory each
adds (separate processes).

    python benchmarks/monitor_overhead.py [--preset tiny] [--rounds 4] [--steps 25] [--micro K] [--seed N] [--json FILE]
    python benchmarks/monitor_overhead.py --fsdp        # FSDP2 on 2 CPU ranks: time and collectives added

Each loop times rounds x steps steps, split over --processes processes run one after the other (2 by default):
each builds every loop afresh, the second in the reverse order, since the loop built first in a process runs
up to 2-3% faster than the same loop built later on our CPU machine (cause not pinned down), which one process
would hand to whichever arm came first. Within a turn the loops run in an order drawn afresh every turn
(`--order shuffled`, seeded), so that no loop always follows the same ones: with the order reversed every other
turn (`--order alternate`) the first and last loops, the two plain ones, would follow themselves at every other
turn's boundary. Beside the wall-clock time, the process's CPU time per step (user and system) of each loop:
with one torch thread, what the loop's own work costs, apart from the host's stalls.

"full" is timed from step 100 of its run (a monitor resumed there), past the probe loss's dense first 30 steps:
steps 100 and 101 run the probe loss and the sequence-length probe (once per process), and its figure per step
is (98 ordinary steps + those two) / 100, what a run with both probes every 100 steps pays.

Goals: on the CPU tiny preset at K = 4, "paper" at most +2% and "full" at most +5% step time; FSDP2 "paper" at
most +2%. On a GPU (gpt2-117m, bf16): "paper" at most 2% (aim 1%), "full" at most 10%.
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
import common  # noqa: E402
from common import (  # noqa: E402
    adamw,
    autocast,
    bare_step,
    interleaved,
    peak_memory_mb,
    timed,
    write_json,
)

import gradvar  # noqa: E402
from gradvar.sinks import TensorBoardSink  # noqa: E402
from trainer.data import WindowSampler, fixed_windows, prepare  # noqa: E402
from trainer.model import build_model  # noqa: E402
from trainer.recipes import preset  # noqa: E402
from trainer.train import next_token_loss  # noqa: E402

PROBE_EVERY = 100
"""Both probes of "full" run every PROBE_EVERY steps; its timed steps start at step PROBE_EVERY of its run."""
MODES = ("none", "paper", "paper_tb", "full", "none_b")


def bench_config(preset_name: str, batch: int = 0, micro: int = 0):
    """The preset's run config with the benchmark's global batch and number of micro-batches per step."""
    cfg = preset(preset_name)
    if batch:
        cfg.optim.batch_size = batch
        cfg.optim.micro_batch_size = min(cfg.optim.micro_batch_size, batch)
    if micro:
        cfg.optim.micro_batch_size = cfg.optim.batch_size // micro
    return cfg


def setup(preset_name: str, mode: str, out: str, device: str, batch: int = 0, micro: int = 0, warmup: int = 2):
    """`micro`: micro-batches per step (K); 0 keeps the preset's micro-batch size. `warmup`: the untimed steps
    before the timed ones ("full" starts its run so that the first timed step is step PROBE_EVERY)."""
    cfg = bench_config(preset_name, batch, micro)
    data = prepare(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.vocab_size).to(device)
    o = cfg.optim
    opt = adamw(cfg, model)
    sampler = WindowSampler(data.train, o.seq_len, 0)
    batches = [sampler.next_batch(o.batch_size).to(device) for _ in range(4)]
    mon = None
    if mode not in ("none", "none_b"):
        probe = fixed_windows(data.val, 4, o.seq_len + 1).to(device)
        ladder = [n + 1 for n in (16, 32, 64, 128, 256) if n < o.seq_len] + [o.seq_len + 1]

        def loss_fn(m, x):
            with autocast(device):
                return next_token_loss(m, x)

        sinks = [TensorBoardSink(Path(out) / mode / "tensorboard")] if mode == "paper_tb" else []
        probes = (
            {
                "probe_batch": probe,
                "probe_every": PROBE_EVERY,
                "probe_loss_every": PROBE_EVERY,
                "probe_seqlens": ladder,
                "loss_fn": loss_fn,
                "resume_step": PROBE_EVERY - 1 - warmup,  # a run resumed there: its own steps 1..30 are behind it
            }
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
        parts = setup(args.preset, mode, out, args.device, args.batch, args.micro, warmup=0)
        timed(stepper(*parts), 12, args.device)  # full: its steps 100 and 101 run the probes
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
    p.add_argument(
        "--processes",
        type=int,
        default=2,
        help="split the timed steps over this many processes, built in turn "
        "in the forward and the reverse order (1: all in this process)",
    )
    p.add_argument(
        "--order",
        choices=("shuffled", "alternate"),
        default="shuffled",
        help="the loops' order within a turn: drawn afresh every turn (seeded), or reversed every other turn",
    )
    p.add_argument("--seed", type=int, default=0, help="the shuffled orders' seed (another seed: a replication)")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--times-child", help=argparse.SUPPRESS)
    return p


def time_loops(args, build_order: tuple[str, ...], n: int) -> dict[str, dict[str, list]]:
    """{"wall": seconds per step, "cpu": (user, system) CPU seconds per step} of each loop, n steps each, one
    step of each in turn (in `args.order`), the loops built in `build_order`."""
    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix="gradvar-overhead-")
    parts = {m: setup(args.preset, m, out, args.device, args.batch, args.micro, args.warmup) for m in build_order}
    cpu: dict[str, list] = {}
    arms = {m: stepper(*parts[m]) for m in MODES}
    wall = interleaved(arms, n, args.warmup, args.device, order=args.order, cpu=cpu, seed=args.seed)
    return {"wall": wall, "cpu": cpu}


def _child_args(args) -> list[str]:
    return [
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
        "--warmup",
        str(args.warmup),
        "--order",
        args.order,
        "--seed",
        str(args.seed),
    ]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.fsdp:
        import fsdp_overhead

        return fsdp_overhead.main(args)
    if args.memory_child:
        memory_child(args, args.memory_child)
        return 0
    total = args.rounds * args.steps
    per = total // max(args.processes, 1)
    if per < 3:
        raise SystemExit("monitor_overhead: time at least 3 steps per loop and process (--rounds x --steps)")
    if args.times_child:
        print(json.dumps(time_loops(args, tuple(args.times_child.split(",")), per)))
        return 0
    orders = [MODES if j % 2 == 0 else MODES[::-1] for j in range(max(args.processes, 1))]
    if args.processes <= 1:
        runs = [time_loops(args, orders[0], per)]
    else:
        runs = []
        for order in orders:  # one after the other: never two timed processes at once
            res = subprocess.run(
                [
                    *_child_args(args),
                    "--processes",
                    "1",
                    "--times-child",
                    ",".join(order),
                    "--rounds",
                    "1",
                    "--steps",
                    str(per),
                ],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    times = {m: [t for run in runs for t in run["wall"][m]] for m in MODES}
    n = len(times["none"])
    o = bench_config(args.preset, args.batch, args.micro).optim
    k = o.batch_size // o.micro_batch_size
    mean = {m: sum(t) / n for m, t in times.items()}
    ref_steps = [(a + b) / 2 for a, b in zip(times["none"], times["none_b"])]  # turn by turn
    # each process's first two timed "full" steps are its steps 100 and 101: the probes
    probes = {i for j in range(len(runs)) for i in (j * per, j * per + 1)}
    probe_loss = sum(run["wall"]["full"][0] for run in runs) / len(runs)
    probe_seqlen = sum(run["wall"]["full"][1] for run in runs) / len(runs)
    ordinary_steps = [t for i, t in enumerate(times["full"]) if i not in probes]
    ordinary_ref = [t for i, t in enumerate(ref_steps) if i not in probes]
    ordinary = sum(ordinary_steps) / len(ordinary_steps)
    # the process's CPU seconds per step, (user, system): with one torch thread, the loop's own work ("full": its
    # ordinary steps)
    cpu_steps = {m: [s for run in runs for s in run["cpu"][m]] for m in MODES}
    cpu_steps["full"] = [s for i, s in enumerate(cpu_steps["full"]) if i not in probes]
    cpu = {m: [sum(s[j] for s in steps) / len(steps) for j in (0, 1)] for m, steps in cpu_steps.items()}
    # the probe steps' extra cost spread over PROBE_EVERY steps, added to the ordinary steps resampled
    probe_extra = len(ordinary_steps) * (probe_loss + probe_seqlen - 2 * ordinary) / PROBE_EVERY
    goals = {"paper": 0.02, "paper_tb": 0.02, "full": 0.05}
    found = {m: common.overhead(times[m], ref_steps, goal=goals[m]) for m in ("paper", "paper_tb")}
    found["full"] = common.overhead(ordinary_steps, ordinary_ref, probe_extra, goal=goals["full"])
    found["full_ordinary"] = common.overhead(ordinary_steps, ordinary_ref)
    floor = common.overhead(times["none_b"], times["none"])
    where = common.host()
    print(
        f"preset {args.preset} on {args.device}, batch {o.batch_size} x {o.seq_len}, K = {k} micro-batches per step, "
        f"{n} steps per loop in {len(runs)} process(es), one step of each loop in turn ({args.order} order, seed "
        f"{args.seed}), torch {torch.__version__}, {where}"
    )
    for m in MODES:
        print(f"  {m:<9} {1000 * mean[m]:8.1f} ms/step")
    print(
        f"noise floor (two identical plain loops): {common.describe_overhead(*floor)}; overheads are against their "
        "mean, intervals from resampling the turns"
    )
    ref_cpu = [(cpu["none"][j] + cpu["none_b"][j]) / 2 for j in (0, 1)]
    added = ", ".join(
        f"{m} {1000 * (cpu[m][0] - ref_cpu[0]):+.1f} / {1000 * (cpu[m][1] - ref_cpu[1]):+.1f}" for m in MODES[1:]
    )
    print(
        f"CPU time of the process per step (user / system): plain loops {1000 * ref_cpu[0]:.1f} / "
        f"{1000 * ref_cpu[1]:.1f} ms; added: {added} ms (full: its ordinary steps)"
    )
    print(f"overhead paper: {common.describe_overhead(*found['paper'], goals['paper'])}")
    print(f"overhead paper + TensorBoard sink: {common.describe_overhead(*found['paper_tb'], goals['paper_tb'])}")
    full = common.describe_overhead(*found["full"], goals["full"])
    print(
        f"overhead full, both probes every {PROBE_EVERY} steps: {full}; ordinary steps "
        f"{common.describe_overhead(*found['full_ordinary'])}, the probe-loss step "
        f"+{1000 * (probe_loss - ordinary):.0f} ms, the sequence-length probe step "
        f"+{1000 * (probe_seqlen - ordinary):.0f} ms"
    )
    overhead = {m: found[m][0] for m in ("paper", "paper_tb", "full")}
    interval = {m: found[m][1:3] for m in ("paper", "paper_tb", "full")}
    verdict = {m: found[m][3] for m in ("paper", "paper_tb", "full")}
    floor = floor[0]
    mem = {}
    for m in MODES[:-1]:
        res = subprocess.run(
            [*_child_args(args), "--memory-child", m],
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
            "ms_per_step": {m: 1000 * mean[m] for m in MODES},
            "order": args.order,
            "seed": args.seed,
            "host": where,
            "cpu_ms_per_step": {m: {"user": 1000 * cpu[m][0], "system": 1000 * cpu[m][1]} for m in MODES},
            "noise_floor": floor,
            "overhead": overhead,
            "interval95": interval,
            "verdict": verdict,
            "peak_mb": mem,
            "peak_mb_added": {m: mem[m] - mem["none"] for m in ("paper", "full")},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
