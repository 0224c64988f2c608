"""Causal branches: from one checkpoint of a run, short continuations in a 2 x 2 design, sequence length
{short, full} x tokens per step {low, high}, every arm starting from the same model, optimizer, data and RNG
state. It separates "long sequences drive extreme variance" from "more tokens per step do":

    short-low    batch B,           length l    B*l tokens per step
    full-low     batch B*l/L,       length L    B*l
    short-high   batch B*L/l,       length l    B*L
    full-high    batch B,           length L    B*L   (the source run's own shape)

Each arm is a run directory holding a copy of the checkpoint and a config.json; `gradvar train --resume DIR`
(or `Trainer(cfg, resume=True)`) trains it. The source run is only read. Each arm keeps the micro-batch
count of the source (micro-batches scale with the batch), and holds the LR at the source's value at the
branch (no decay: the arms consume tokens at different rates, and a token-based decay would differ).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch

from gradvar.slw import token_matched_batch
from trainer.config import ConfigError, TrainConfig, apply_overrides, load_json
from trainer.lr import lr_at

ARMS = ("short-low", "full-low", "short-high", "full-high")


def arm_overrides(cfg: TrainConfig, short: int) -> dict[str, dict]:
    """Batch, micro-batch and length of each arm for a source run of batch B at full length L."""
    o, full = cfg.optim, cfg.optim.seq_len
    if full % short:
        raise ConfigError(f"branch at length {short}: the full length {full} is not a multiple of it")
    grow = full // short
    try:
        low_rows, low_micro = (token_matched_batch(n, short, full) for n in (o.batch_size, o.micro_batch_size))
    except ValueError as exc:
        raise ConfigError(f"branch at length {short}: {exc}") from None
    fixed_short = {
        "slw.enabled": True,
        "slw.schedule_type": "fixed_discrete",
        "slw.difficulties": [short, short],
        "slw.max_steps": [1],
    }
    plain = {"slw.enabled": False}
    shape = {
        "short-low": (o.batch_size, o.micro_batch_size, fixed_short),
        "full-low": (low_rows, low_micro, plain),
        "short-high": (o.batch_size * grow, o.micro_batch_size * grow, fixed_short),
        "full-high": (o.batch_size, o.micro_batch_size, plain),
    }
    common = {"slw.control": "off", "slw.schedule": "fixed"}
    return {
        arm: {"optim.batch_size": b, "optim.micro_batch_size": m, **common, **length}
        for arm, (b, m, length) in shape.items()
    }


def branch_plan(source: Path, step: int, out_root: Path) -> dict[str, Path]:
    """The arm directories make_branches writes for (source, step), without writing them."""
    return {arm: Path(out_root) / f"{Path(source).name}-at{step}-{arm}" for arm in ARMS}


def make_branches(source: Path, step: int, out_root: Path, short: int, steps: int) -> dict[str, Path]:
    """Write the four arms' run directories (out_root/<source>-at<step>-<arm>), each with a copy of the
    source's checkpoint at `step`; return {arm: run directory}."""
    source, out_root = Path(source), Path(out_root)
    cfg = apply_overrides(TrainConfig(), load_json(source / "config.json"))
    ckpt = source / "checkpoints" / f"step-{step:09d}.pt"
    if not ckpt.is_file():
        have = sorted(p.name for p in (source / "checkpoints").glob("step-*.pt"))
        raise ConfigError(f"{ckpt}: no such checkpoint (have: {', '.join(have) or 'none'})")
    tokens = int(torch.load(ckpt, map_location="cpu", weights_only=True)["tokens"])
    o = cfg.optim
    lr = lr_at(step + 1, tokens, o.lr, o.min_lr, 0, o.train_tokens)  # the decayed value, without warmup
    out, plan = {}, branch_plan(source, step, out_root)
    for arm, over in arm_overrides(cfg, short).items():
        dest = plan[arm]
        fixed = {
            **over,
            "name": dest.name,
            "out_dir": str(out_root),
            "optim.lr": lr,
            "optim.min_lr": lr,
            "optim.max_steps": step + steps,
            "optim.train_tokens": tokens + 2 * steps * o.batch_size * o.seq_len,  # never the stopping rule
            "eval.every": 0,
            "checkpoint.every": 0,
            "checkpoint.steps": [],
            "monitor.probe_loss_every": 1,
            "monitor.quantities": "full",  # update size and attention-logit max
            "monitor.probe_at": [],
            "monitor.probe_every": 10**9,  # no sequence-length probe: its cost would dwarf 10 steps
        }
        arm_cfg = apply_overrides(copy.deepcopy(cfg), fixed).validate()
        (dest / "checkpoints").mkdir(parents=True, exist_ok=True)
        for f in (ckpt, ckpt.with_name(ckpt.name + ".sha256")):
            if f.exists():
                shutil.copyfile(f, dest / "checkpoints" / f.name)  # a copy: the source is never opened for writing
        (dest / "config.json").write_text(json.dumps(arm_cfg.to_dict(), indent=2, default=str))
        branch = {"source": str(source), "step": step, "arm": arm, "short": short, "lr": lr}
        (dest / "branch.json").write_text(json.dumps(branch, indent=2))  # the trainer rewrites config.json
        out[arm] = dest
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m study.branch", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="the run directory to branch from")
    p.add_argument("--step", type=int, required=True, help="the checkpoint step to branch at")
    p.add_argument("--short", type=int, default=64, help="the short length (default 64)")
    p.add_argument("--steps", type=int, default=10, help="steps each arm trains (default 10)")
    p.add_argument("--out", default=None, help="folder for the arms (default: beside the source)")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.source).parent
    try:
        arms = make_branches(Path(args.source), args.step, out, args.short, args.steps)
    except ConfigError as exc:
        print(f"branch: error: {exc}")
        return 2
    for arm, path in arms.items():
        print(f"{arm}: python -m trainer.cli --resume {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
