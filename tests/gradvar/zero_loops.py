"""The loops of the ZeRO test: a user's DeepSpeed loop on each rank (run by torchrun: `python zero_loops.py
OUT STAGE...`, every stage in one launch to pay DeepSpeed's start-up once) and the single-process reference
over the same micro-batches."""

import collections
import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gv_helpers import paper_quantities, single_reference, step_batches, tiny_gpt2  # noqa: E402

import gradvar  # noqa: E402

WORLD, K_LOCAL, B_S, STEPS, CLIP, LR = 2, 2, 2, 3, 0.3, 1e-2
K = WORLD * K_LOCAL


def model():
    """Width 15: the layer norms and biases have an odd number of elements, so under stage 3 the last rank's
    slice of each ends in padding (whose zeros the statistics must leave out: adam_v_min would show them)."""
    return tiny_gpt2(n_embd=15, n_head=3)


def batches():
    return step_batches(K, B_S, STEPS)


def optimizer(model) -> torch.optim.AdamW:
    """Two parameter groups (weight decay on matrices only): DeepSpeed then steps one partition per group."""
    params = list(model.parameters())
    return torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2]}, {"params": [p for p in params if p.dim() < 2]}],
        lr=LR,
        weight_decay=0.1,
    )


def config(stage: int, bf16: bool = False) -> dict:
    # stage 3: sub-groups of at most 1000 elements, so that each group spans several flat partitions
    zero = {"stage": stage} | ({"sub_group_size": 1000} if stage == 3 else {})
    return {
        "train_micro_batch_size_per_gpu": B_S,
        "gradient_accumulation_steps": K_LOCAL,
        "gradient_clipping": CLIP,
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "bf16": {"enabled": bf16},
    }


COLLECTIVES = ("all_reduce", "all_gather_into_tensor", "all_gather_single", "all_gather", "broadcast", "reduce_scatter")


@contextlib.contextmanager
def counting(counter: collections.Counter):
    """Count the torch.distributed collectives called inside the block (the monitor calls them by name)."""
    import torch.distributed as dist

    saved = {n: getattr(dist, n) for n in COLLECTIVES if hasattr(dist, n)}

    def wrap(name, fn):
        def counted(*args, **kwargs):
            counter[name] += 1
            return fn(*args, **kwargs)

        return counted

    for n, fn in saved.items():
        setattr(dist, n, wrap(n, fn))
    try:
        yield counter
    finally:
        for n, fn in saved.items():
            setattr(dist, n, fn)


def zero_run(stage: int, run_dir: Path, bf16: bool = False) -> None:
    import deepspeed
    import torch.distributed as dist

    net = model()
    engine, *_ = deepspeed.initialize(model=net, optimizer=optimizer(net), config=config(stage, bf16))
    mon = gradvar.DeepSpeedMonitor(engine, run_dir, paper_quantities(), flush_every=2, notify=lambda *a: None)
    rank, norms, calls = dist.get_rank(), [], collections.Counter()
    assert mon.optimizer.n_calls > (2 if stage == 3 else 1)  # the partitions DeepSpeed steps one by one
    for x in batches():
        for c in x.split(B_S)[rank * K_LOCAL : (rank + 1) * K_LOCAL]:
            loss = engine(input_ids=c, labels=c).loss
            engine.backward(loss)
            engine.step()
            with counting(calls):
                mon.step()
        norms.append(float(engine.get_global_grad_norm()))
    try:
        mon.clip_grad_norm_(CLIP)
        raise AssertionError("DeepSpeedMonitor.clip_grad_norm_ should refuse: the engine clips")
    except RuntimeError as e:
        assert "gradient_clipping" in str(e)
    at_close = collections.Counter()
    with counting(at_close):
        mon.close()
    if rank == 0:
        (run_dir / "engine_norms.json").write_text(json.dumps(norms))
        (run_dir / "collectives.json").write_text(json.dumps({"steps": calls, "close": at_close}))
    dist.barrier()


def single_run(run_dir: Path) -> None:
    net = model()
    single_reference(net, optimizer(net), run_dir, batches(), B_S, CLIP)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    for s in sys.argv[2:]:  # "2" or "2bf16": the stage, and bf16 weights with fp32 master partitions
        zero_run(int(s[0]), out / f"zero{s}", bf16=s.endswith("bf16"))
