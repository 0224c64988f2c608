"""gradvar "paper" under FSDP2 on 2 CPU ranks (gloo): step time against the same sharded loop unmonitored, one
step of each loop in turn beside a second unmonitored loop (the A/A control: the run's noise floor), and the
collectives the monitor adds per step and per flush.

    python benchmarks/monitor_overhead.py --fsdp [--preset tiny] [--rounds 4] [--steps 25] [--order alternate]
        [--seed N]

Both loops shard each block and the root with fully_shard and accumulate K = 2 micro-batches per rank
(set_requires_gradient_sync on the last); the plain loop clips with torch.nn.utils.clip_grad_norm_, the
monitored one with Monitor.clip_grad_norm_ (which makes the global-norm all-reduce torch's makes through
DTensor). Collectives are counted by wrapping torch.distributed's functions (gradvar's all-reduces go through
them); torch's DTensor norm goes through functional collectives instead,
so its all-reduce is not in the plain loop's count, and FSDP2 calls its process group's methods directly, so
its own all-gathers and reduce-scatters (the same in both loops) are not counted either.
"""

from __future__ import annotations

import collections
import os
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import adamw, describe_overhead, host, interleaved, overhead  # noqa: E402

NAMES = (
    "all_reduce",
    "all_gather_into_tensor",
    "all_gather_single",
    "reduce_scatter_tensor",
    "all_gather",
    "broadcast",
    "reduce_scatter",
)
COUNTS: collections.Counter = collections.Counter()


def _count_collectives() -> None:
    for name in NAMES:
        fn = getattr(dist, name, None)
        if fn is not None:

            def wrapped(*a, _fn=fn, _name=name, **k):
                COUNTS[_name] += 1
                return _fn(*a, **k)

            setattr(dist, name, wrapped)


def _build(cfg, vocab, monitored: bool, out: str):
    from torch.distributed.fsdp import fully_shard

    import gradvar
    from trainer.model import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model, vocab)
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
    opt = adamw(cfg, model)
    mon = (
        gradvar.Monitor(
            model, opt, Path(out) / "paper", "paper", flush_every=50, handle_sigterm=False, notify=lambda *a: None
        )
        if monitored
        else None
    )
    return model, opt, mon


def _stepper(cfg, model, opt, mon, batches, rank: int):
    from trainer.train import next_token_loss

    o, i = cfg.optim, [0]

    def step():
        i[0] += 1
        local = batches[i[0] % len(batches)].chunk(2)[rank]
        chunks = local.split(max(1, len(local) // 2))
        for j, mb in enumerate(chunks):
            model.set_requires_gradient_sync(j == len(chunks) - 1)
            (next_token_loss(model, mb) / len(chunks)).backward()
        if mon is None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip)
        else:
            mon.clip_grad_norm_(o.clip)
        opt.step()
        if mon is not None:
            mon.step(seqlen=o.seq_len - 1, batch_size=o.batch_size)
        opt.zero_grad(set_to_none=True)

    return step


def _counted(fn, n: int) -> collections.Counter:
    COUNTS.clear()
    for _ in range(n):
        fn()
    return collections.Counter(COUNTS)


def _worker(rank, port, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from trainer.data import WindowSampler, prepare
    from trainer.recipes import preset

    cfg = preset(args.preset)
    data = prepare(cfg.data)
    sampler = WindowSampler(data.train, cfg.optim.seq_len, 0)
    batches = [sampler.next_batch(cfg.optim.batch_size) for _ in range(4)]
    out = tempfile.mkdtemp(prefix="gradvar-fsdp-overhead-")
    _count_collectives()
    built = {m: _build(cfg, data.vocab_size, m == "paper", out) for m in ("none", "paper", "none_b")}
    steps = {m: _stepper(cfg, *parts, batches, rank) for m, parts in built.items()}
    counts = {m: _counted(fn, args.warmup) for m, fn in steps.items()}  # steps 1..warmup: no flush yet
    # seeded: both ranks draw one order
    times = interleaved(steps, args.rounds * args.steps, 0, before=dist.barrier, order=args.order, seed=args.seed)
    mon = built["paper"][2]
    steps["paper"]()  # at least one buffered step
    flush = _counted(mon.flush, 1)
    if rank == 0:
        _report(args, times, counts, flush)
    dist.barrier()
    dist.destroy_process_group()


def _report(args, times, counts, flush) -> None:
    n = args.rounds * args.steps
    print(
        f"FSDP2, 2 gloo ranks (CPU, 1 thread each), preset {args.preset}, K = 2 micro-batches per rank, {n} steps "
        f"per loop, one step of each loop in turn ({args.order} order, seed {args.seed}; rank 0's times), torch "
        f"{torch.__version__}, {host()}"
    )
    mean = {m: sum(t) / n for m, t in times.items()}
    for m, v in mean.items():
        print(f"  {m:<7} {1000 * v:8.1f} ms/step")
    floor = overhead(times["none_b"], times["none"])
    print(f"noise floor (two identical plain loops): {describe_overhead(*floor)}, intervals from resampling the turns")
    ref = [(a + b) / 2 for a, b in zip(times["none"], times["none_b"])]
    print(f"overhead paper against their mean: {describe_overhead(*overhead(times['paper'], ref, goal=0.02), 0.02)}")
    per = {m: {k: v / args.warmup for k, v in c.items()} for m, c in counts.items()}
    extra = {k: per["paper"].get(k, 0) - per["none"].get(k, 0) for k in set(per["paper"]) | set(per["none"])}
    print(
        f"calls of torch.distributed's collectives per step, plain loop: {dict(sorted(per['none'].items()))} "
        "(FSDP2 calls its process group directly: its all-gathers and reduce-scatters are the same in both loops)"
    )
    print(
        f"collectives per step added by the monitor: {dict(sorted((k, v) for k, v in extra.items() if v))} "
        "(the all_reduce is clipping's global norm; torch's clip makes it too, uncounted)"
    )
    print(f"collectives per flush (every 50 steps): {dict(sorted(flush.items()))}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(args) -> int:
    mp.start_processes(_worker, args=(_free_port(), args), nprocs=2, start_method="spawn")
    return 0
